//! A DataFusion scalar function with a fast path in front: the fast path answers the arguments it
//! knows, and everything else is DataFusion's own (name, aliases, signature, result type, pruning
//! preimage, documentation, and the call itself for any other arguments).

use std::hash::{Hash, Hasher};
use std::sync::Arc;

use datafusion::arrow::array::ArrayRef;
use datafusion::arrow::datatypes::{DataType, FieldRef};
use datafusion::common::Result;
use datafusion::logical_expr::preimage::PreimageResult;
use datafusion::logical_expr::simplify::SimplifyContext;
use datafusion::logical_expr::{
    ColumnarValue, Documentation, Expr, ReturnFieldArgs, ScalarFunctionArgs, ScalarUDF,
    ScalarUDFImpl, Signature,
};

/// A fast path: the result for `args`, or `None` when they are not ones it answers (DataFusion's
/// function then answers them, errors included).
pub type FastPath = fn(args: &[ColumnarValue]) -> Option<ArrayRef>;

/// DataFusion's function `builtin`, with `fast` tried first on every call.
#[derive(Debug)]
pub struct WithFastPath {
    builtin: Arc<ScalarUDF>,
    fast: FastPath,
}

impl WithFastPath {
    /// `builtin` with `fast` in front, as a function sessions register (in place of `builtin`).
    pub fn udf(builtin: Arc<ScalarUDF>, fast: FastPath) -> ScalarUDF {
        ScalarUDF::from(WithFastPath { builtin, fast })
    }
}

impl PartialEq for WithFastPath {
    fn eq(&self, other: &Self) -> bool {
        self.builtin == other.builtin && std::ptr::fn_addr_eq(self.fast, other.fast)
    }
}

impl Eq for WithFastPath {}

impl Hash for WithFastPath {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.builtin.hash(state);
    }
}

impl ScalarUDFImpl for WithFastPath {
    fn name(&self) -> &str {
        self.builtin.name()
    }

    fn aliases(&self) -> &[String] {
        self.builtin.aliases()
    }

    fn signature(&self) -> &Signature {
        self.builtin.signature()
    }

    fn return_type(&self, arg_types: &[DataType]) -> Result<DataType> {
        self.builtin.return_type(arg_types)
    }

    fn return_field_from_args(&self, args: ReturnFieldArgs) -> Result<FieldRef> {
        self.builtin.return_field_from_args(args)
    }

    fn preimage(
        &self,
        args: &[Expr],
        lit_expr: &Expr,
        info: &SimplifyContext,
    ) -> Result<PreimageResult> {
        self.builtin.preimage(args, lit_expr, info)
    }

    fn documentation(&self) -> Option<&Documentation> {
        self.builtin.documentation()
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        if let Some(out) = (self.fast)(&args.args) {
            return Ok(ColumnarValue::Array(out));
        }
        self.builtin.invoke_with_args(args)
    }
}
