//! The PostgreSQL wire protocol endpoint (pgwire, with datafusion-postgres's catalog tables and
//! Arrow encoders): SCRAM-SHA-256 logins, the read-only guard on every statement, each query in a
//! session of its own under the query limits, and results streamed to the client as they come.

use std::fmt::Debug;
use std::sync::Arc;
use std::time::Instant as StdInstant;

use async_trait::async_trait;
use datafusion::arrow::datatypes::DataType;
use datafusion::common::ParamValues;
use datafusion::error::DataFusionError;
use datafusion::logical_expr::{EmptyRelation, LogicalPlan};
use datafusion::prelude::SessionContext;
use datafusion::sql::sqlparser::ast::Statement;
use datafusion_postgres::arrow_pg::datatypes::df::deserialize_parameters_with_server_types;
use datafusion_postgres::arrow_pg::datatypes::{
    arrow_schema_to_pg_fields, encode_recordbatch, into_pg_type,
};
use datafusion_postgres::hooks::QueryHook;
use datafusion_postgres::hooks::set_show::SetShowHook;
use datafusion_postgres::hooks::transactions::TransactionStatementHook;
use datafusion_postgres::pgwire;
use futures::{Sink, StreamExt, stream};
use pgwire::api::auth::noop::NoopStartupHandler;
use pgwire::api::auth::sasl::SASLAuthStartupHandler;
use pgwire::api::auth::sasl::scram::ScramAuth;
use pgwire::api::auth::{AuthSource, DefaultServerParameterProvider, LoginInfo, Password};
use pgwire::api::portal::{Format, Portal};
use pgwire::api::query::{ExtendedQueryHandler, SimpleQueryHandler};
use pgwire::api::results::{FieldInfo, QueryResponse, Response, Tag};
use pgwire::api::stmt::QueryParser;
use pgwire::api::store::PortalStore;
use pgwire::api::{ClientInfo, ClientPortalStore, ErrorHandler, PgWireServerHandlers, Type};
use pgwire::error::{ErrorInfo, PgWireError, PgWireResult};
use pgwire::messages::PgWireBackendMessage;
use pgwire::types::format::FormatOptions;

use crate::engine::guard::{Access, ClientStatement, classify, plan_statement};
use crate::error::Error;
use crate::sql_server::compat;
use crate::sql_server::limits::{QueryLimits, statement_timeout, timeout_error, with_deadline};
use crate::sql_server::users::{FailedLogins, ITERATIONS, Users};

/// A parsed statement and its plan at Parse time (the shape datafusion-postgres's hooks expect).
pub type PgStatement = (String, Option<(Statement, LogicalPlan)>);

/// The handlers of one endpoint; `S` is the startup (login) handler.
pub struct PgHandlers<S> {
    queries: Arc<QueryService>,
    startup: Arc<S>,
    errors: Arc<LoginErrors>,
}

impl<S> PgHandlers<S> {
    pub fn new(queries: Arc<QueryService>, startup: Arc<S>, failed: Arc<FailedLogins>) -> Self {
        PgHandlers {
            queries,
            startup,
            errors: Arc::new(LoginErrors { failed }),
        }
    }
}

impl<S: pgwire::api::auth::StartupHandler + 'static> PgWireServerHandlers for PgHandlers<S> {
    fn simple_query_handler(&self) -> Arc<impl SimpleQueryHandler> {
        self.queries.clone()
    }

    fn extended_query_handler(&self) -> Arc<impl ExtendedQueryHandler> {
        self.queries.clone()
    }

    fn startup_handler(&self) -> Arc<impl pgwire::api::auth::StartupHandler> {
        self.startup.clone()
    }

    fn error_handler(&self) -> Arc<impl ErrorHandler> {
        self.errors.clone()
    }
}

/// Server parameters sent at login: a read-only server in UTC.
pub fn server_parameters() -> DefaultServerParameterProvider {
    let mut parameters = DefaultServerParameterProvider::default();
    parameters.default_transaction_read_only = true;
    parameters
}

/// Logins checked with SCRAM-SHA-256 against the users' password hashes. The handler keeps the
/// exchange's state: make one per connection.
pub fn scram_startup(
    users: Arc<Users>,
    failed: Arc<FailedLogins>,
) -> SASLAuthStartupHandler<DefaultServerParameterProvider> {
    let mut scram = ScramAuth::new(Arc::new(UserPasswords { users, failed }));
    scram.set_iterations(ITERATIONS);
    SASLAuthStartupHandler::new(Arc::new(server_parameters())).with_scram(scram)
}

/// Logins without a password (`--no-auth`, loopback only).
#[derive(Debug, Default)]
pub struct NoAuth;

impl NoopStartupHandler for NoAuth {}

/// The password hash a login is checked against, unless its address is locked out.
#[derive(Debug)]
struct UserPasswords {
    users: Arc<Users>,
    failed: Arc<FailedLogins>,
}

#[async_trait]
impl AuthSource for UserPasswords {
    async fn get_password(&self, login: &LoginInfo) -> PgWireResult<Password> {
        if let Some(wait) = self.failed.locked_for(login.host(), StdInstant::now()) {
            tracing::warn!(
                user = login.user().unwrap_or(""),
                address = login.host(),
                "login refused: too many failed logins"
            );
            return Err(error(
                "FATAL",
                "28000",
                format!(
                    "too many failed logins from this address; try again in {} s",
                    wait.as_secs() + 1
                ),
            ));
        }
        let hash = self
            .users
            .hash_for(login.user().unwrap_or(""))
            .ok_or_else(|| error("FATAL", "28000", "no users are configured".into()))?;
        Ok(Password::new(Some(hash.salt.clone()), hash.salted.clone()))
    }
}

/// Logs failed logins (the user name and address, never the secret) and counts them per address.
#[derive(Debug)]
pub struct LoginErrors {
    failed: Arc<FailedLogins>,
}

impl ErrorHandler for LoginErrors {
    fn on_error<C: ClientInfo>(&self, client: &C, e: &mut PgWireError) {
        let address = client.socket_addr().ip().to_string();
        match e {
            PgWireError::InvalidPassword(user) => {
                // SCRAM clients leave the user out of their messages: name the startup's.
                if user.is_empty()
                    && let Some(name) = client.metadata().get(pgwire::api::METADATA_USER)
                {
                    *user = name.clone();
                }
                tracing::warn!(user = %user, address = %address, "login failed: wrong user or password");
                self.failed.record(&address, StdInstant::now());
            }
            PgWireError::InvalidScramMessage(_) => {
                tracing::warn!(address = %address, "login failed: bad SCRAM exchange");
                self.failed.record(&address, StdInstant::now());
            }
            other => tracing::debug!(address = %address, error = %other, "statement failed"),
        }
    }
}

/// Runs client statements: the guard first, then each query in a session of its own.
pub struct QueryService {
    base: Arc<SessionContext>,
    limits: QueryLimits,
    parser: Arc<StatementParser>,
}

impl QueryService {
    pub fn new(base: Arc<SessionContext>, limits: QueryLimits) -> QueryService {
        QueryService {
            parser: Arc::new(StatementParser {
                base: base.clone(),
                sql: datafusion_postgres::datafusion_pg_catalog::sql::PostgresCompatibilityParser::new(),
            }),
            base,
            limits,
        }
    }

    /// Plan `statement` in a fresh session (each Delta table at its latest version) and stream it.
    async fn run_query<C: ClientInfo + ?Sized>(
        &self,
        client: &C,
        statement: Statement,
        expected: Option<&LogicalPlan>,
        params: Option<ParamValues>,
        format: &Format,
    ) -> PgWireResult<QueryResponse> {
        let timeout = self.limits.timeout(datafusion_postgres_timeout(client));
        let deadline = tokio::time::Instant::now() + timeout;
        let ctx = self.limits.session(&self.base).map_err(df_error)?;
        let start = async {
            let plan = plan_statement(&ctx.state(), statement, Access::ReadOnly)
                .await
                .map_err(crate_error)?;
            if let Some(expected) = expected
                && plan.schema().as_arrow().fields() != expected.schema().as_arrow().fields()
            {
                return Err(error(
                    "ERROR",
                    crate::engine::guard::UNSUPPORTED_SQLSTATE,
                    "cached plan must not change result type: a table changed since the statement was prepared; prepare it again".into(),
                ));
            }
            let plan = match params {
                Some(p) => plan.replace_params_with_values(&p).map_err(df_error)?,
                None => plan,
            };
            let df = ctx.execute_logical_plan(plan).await.map_err(df_error)?;
            let schema = df.schema().as_arrow().clone();
            Ok((schema, df.execute_stream().await.map_err(df_error)?))
        };
        let (schema, batches) = tokio::time::timeout_at(deadline, start)
            .await
            .map_err(|_| df_error(timeout_error(timeout)))??;
        let options = Arc::new(FormatOptions::from_client_metadata(client.metadata()));
        let fields = Arc::new(arrow_schema_to_pg_fields(&schema, format, Some(options))?);
        let encode = fields.clone();
        let rows = with_deadline(batches, deadline, timeout)
            .map(move |batch| match batch {
                Ok(batch) => {
                    stream::iter(encode_recordbatch(encode.clone(), batch).collect::<Vec<_>>())
                }
                Err(e) => stream::iter(vec![Err(df_error(e))]),
            })
            .flatten();
        Ok(QueryResponse::new(fields, rows))
    }
}

/// The client's own `SET statement_timeout`, as datafusion-postgres's hook stores it.
fn datafusion_postgres_timeout<C: ClientInfo + ?Sized>(client: &C) -> Option<std::time::Duration> {
    client
        .metadata()
        .get("statement_timeout_ms")
        .and_then(|ms| ms.parse::<u64>().ok())
        .map(std::time::Duration::from_millis)
}

/// The command tag of a session statement no hook answered: savepoints are accepted and kept by
/// nothing (there is nothing to roll back), other settings are accepted and ignored.
fn session_tag(statement: &Statement) -> Tag {
    match statement {
        Statement::Savepoint { .. } => Tag::new("SAVEPOINT"),
        Statement::ReleaseSavepoint { .. } => Tag::new("RELEASE"),
        _ => Tag::new("SET"),
    }
}

/// The connection-scoped statements (SET, SHOW, BEGIN, COMMIT) go to datafusion-postgres's hooks,
/// given a scratch session: nothing they do reaches the engine's settings.
fn session_hooks() -> [Arc<dyn QueryHook>; 2] {
    [Arc::new(TransactionStatementHook), Arc::new(SetShowHook)]
}

#[async_trait]
impl SimpleQueryHandler for QueryService {
    async fn do_query<C>(&self, client: &mut C, query: &str) -> PgWireResult<Vec<Response>>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let statements = self.parser.parse(query)?;
        if statements.is_empty() {
            return Ok(vec![Response::EmptyQuery]);
        }
        let mut responses = Vec::with_capacity(statements.len());
        for statement in statements {
            let response = match classify(&statement) {
                ClientStatement::Refused { sqlstate, message } => {
                    return Err(error("ERROR", sqlstate, message));
                }
                ClientStatement::Session => {
                    let scratch = SessionContext::new();
                    let mut answer = None;
                    for hook in session_hooks() {
                        answer = hook.handle_simple_query(&statement, &scratch, client).await;
                        if answer.is_some() {
                            break;
                        }
                    }
                    answer.unwrap_or_else(|| Ok(Response::Execution(session_tag(&statement))))?
                }
                ClientStatement::Query => Response::Query(
                    self.run_query(&*client, statement, None, None, &Format::UnifiedText)
                        .await?,
                ),
            };
            responses.push(response);
        }
        Ok(responses)
    }
}

#[async_trait]
impl ExtendedQueryHandler for QueryService {
    type Statement = PgStatement;
    type QueryParser = StatementParser;

    fn query_parser(&self) -> Arc<StatementParser> {
        self.parser.clone()
    }

    async fn do_query<C>(
        &self,
        client: &mut C,
        portal: &Portal<PgStatement>,
        _max_rows: usize,
    ) -> PgWireResult<Response>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = PgStatement>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let (_, Some((statement, plan))) = &portal.statement.statement else {
            return Ok(Response::EmptyQuery);
        };
        if classify(statement) != ClientStatement::Query {
            let scratch = SessionContext::new();
            let none = ParamValues::List(vec![]);
            for hook in session_hooks() {
                if let Some(answer) = hook
                    .handle_extended_query(statement, plan, &none, &scratch, client)
                    .await
                {
                    return answer;
                }
            }
            return Ok(Response::Execution(session_tag(statement)));
        }
        let types = parameter_types(plan)?;
        let wire = wire_types(&types)?;
        let type_refs: Vec<Option<&DataType>> = types.iter().map(Option::as_ref).collect();
        let wire_refs: Vec<Option<&Type>> = wire.iter().map(Some).collect();
        let params = deserialize_parameters_with_server_types(portal, &type_refs, &wire_refs)?;
        let response = self
            .run_query(
                &*client,
                statement.clone(),
                Some(plan),
                Some(params),
                &portal.result_column_format,
            )
            .await?;
        Ok(Response::Query(response))
    }
}

/// Statements that write or change the catalog, whatever follows them.
const WRITE_KEYWORDS: [&str; 10] = [
    "CREATE", "DROP", "ALTER", "INSERT", "UPDATE", "DELETE", "COPY", "TRUNCATE", "MERGE", "GRANT",
];

/// Parses client SQL in PostgreSQL's dialect (with datafusion-postgres's rewrites for what BI
/// tools send) and plans each statement at Parse time for its parameter and result types.
pub struct StatementParser {
    base: Arc<SessionContext>,
    sql: datafusion_postgres::datafusion_pg_catalog::sql::PostgresCompatibilityParser,
}

impl StatementParser {
    fn parse(&self, sql: &str) -> PgWireResult<Vec<Statement>> {
        let statements = self.sql.parse(sql).map_err(|e| {
            // DataFusion's own write statements (CREATE EXTERNAL TABLE, COPY ... STORED AS) are
            // not PostgreSQL: refuse them as writes, not as syntax errors.
            let first = sql.split_whitespace().next().unwrap_or_default();
            if WRITE_KEYWORDS.contains(&first.to_ascii_uppercase().as_str()) {
                error(
                    "ERROR",
                    crate::engine::guard::READ_ONLY_SQLSTATE,
                    format!("cannot execute {} in a read-only session: the SQL endpoint serves the curated tables read-only", first.to_ascii_uppercase()),
                )
            } else {
                error("ERROR", "42601", e.to_string())
            }
        })?;
        Ok(statements.into_iter().map(compat::rewrite).collect())
    }
}

#[async_trait]
impl QueryParser for StatementParser {
    type Statement = PgStatement;

    async fn parse_sql<C>(
        &self,
        client: &C,
        sql: &str,
        _types: &[Option<Type>],
    ) -> PgWireResult<Option<PgStatement>>
    where
        C: ClientInfo + Unpin + Send + Sync,
    {
        let mut statements = self.parse(sql)?;
        if statements.is_empty() {
            return Ok(None);
        }
        if statements.len() > 1 {
            return Err(error(
                "ERROR",
                "42601",
                "cannot insert multiple commands into a prepared statement".into(),
            ));
        }
        let statement = statements.remove(0);
        let text = statement.to_string();
        let plan = match classify(&statement) {
            ClientStatement::Refused { sqlstate, message } => {
                return Err(error("ERROR", sqlstate, message));
            }
            ClientStatement::Session => {
                let scratch = SessionContext::new();
                let mut plan = None;
                for hook in session_hooks() {
                    plan = hook
                        .handle_extended_parse_query(&statement, &scratch, client)
                        .await;
                    if plan.is_some() {
                        break;
                    }
                }
                plan.unwrap_or_else(|| Ok(empty_plan()))?
            }
            ClientStatement::Query => {
                plan_statement(&self.base.state(), statement.clone(), Access::ReadOnly)
                    .await
                    .map_err(crate_error)?
            }
        };
        Ok(Some((text, Some((statement, plan)))))
    }

    fn get_parameter_types(&self, stmt: &PgStatement) -> PgWireResult<Vec<Type>> {
        match stmt {
            (_, Some((_, plan))) => wire_types(&parameter_types(plan)?),
            _ => Ok(vec![]),
        }
    }

    fn get_result_schema(
        &self,
        stmt: &PgStatement,
        column_format: Option<&Format>,
    ) -> PgWireResult<Vec<FieldInfo>> {
        match stmt {
            (_, Some((_, plan))) if !matches!(plan, LogicalPlan::Ddl(_) | LogicalPlan::Dml(_)) => {
                arrow_schema_to_pg_fields(
                    plan.schema().as_arrow(),
                    column_format.unwrap_or(&Format::UnifiedText),
                    None,
                )
            }
            _ => Ok(vec![]),
        }
    }
}

fn empty_plan() -> LogicalPlan {
    LogicalPlan::EmptyRelation(EmptyRelation {
        produce_one_row: false,
        schema: Arc::new(datafusion::common::DFSchema::empty()),
    })
}

/// The plan's `$1`, `$2`, ... types in order (`None` where DataFusion could not infer one).
fn parameter_types(plan: &LogicalPlan) -> PgWireResult<Vec<Option<DataType>>> {
    let types = plan.get_parameter_types().map_err(df_error)?;
    let mut numbered: Vec<(usize, Option<DataType>)> = types
        .into_iter()
        .filter_map(|(id, t)| {
            id.trim_start_matches('$')
                .parse::<usize>()
                .ok()
                .map(|n| (n, t))
        })
        .collect();
    numbered.sort_by_key(|(n, _)| *n);
    Ok(numbered.into_iter().map(|(_, t)| t).collect())
}

fn wire_types(types: &[Option<DataType>]) -> PgWireResult<Vec<Type>> {
    types
        .iter()
        .map(|t| t.as_ref().map_or(Ok(Type::UNKNOWN), into_pg_type))
        .collect()
}

/// A PostgreSQL error with its SQLSTATE.
pub fn error(severity: &str, sqlstate: &str, message: String) -> PgWireError {
    PgWireError::UserError(Box::new(ErrorInfo::new(
        severity.to_string(),
        sqlstate.to_string(),
        message,
    )))
}

/// A DataFusion error with the SQLSTATE a PostgreSQL client understands.
fn df_error(e: DataFusionError) -> PgWireError {
    if let Some(timeout) = statement_timeout(&e) {
        return error("ERROR", "57014", timeout.to_string());
    }
    let sqlstate = match e.find_root() {
        DataFusionError::ResourcesExhausted(_) => "53200",
        DataFusionError::SQL(..) => "42601",
        DataFusionError::Plan(m) if m.contains("not found") => "42P01",
        DataFusionError::SchemaError(..) => "42703",
        DataFusionError::Plan(_) => "42000",
        _ => "XX000",
    };
    error("ERROR", sqlstate, crate::engine::job::strip_context(&e))
}

fn crate_error(e: Error) -> PgWireError {
    match e {
        Error::DataFusion(e) => df_error(e),
        Error::ReadOnly { message } => {
            error("ERROR", crate::engine::guard::READ_ONLY_SQLSTATE, message)
        }
        other => error("ERROR", "XX000", other.to_string()),
    }
}

/// Refuses a login past the endpoint's connection limit, as PostgreSQL does (SQLSTATE 53300).
#[derive(Debug)]
pub struct TooManyConnections(pub usize);

#[async_trait]
impl pgwire::api::auth::StartupHandler for TooManyConnections {
    async fn on_startup<C>(
        &self,
        _client: &mut C,
        _message: pgwire::messages::PgWireFrontendMessage,
    ) -> PgWireResult<()>
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        Err(error(
            "FATAL",
            "53300",
            format!("sorry, too many clients already (at most {})", self.0),
        ))
    }
}
