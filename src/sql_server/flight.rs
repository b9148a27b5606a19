//! The Arrow Flight SQL endpoint (arrow-flight's `FlightSqlService` over tonic): queries and
//! prepared statements through the same read-only guard and query limits as the PostgreSQL
//! endpoint, results streamed as Arrow batches, the catalog calls BI drivers make (catalogs,
//! schemas and tables with or without a catalog filter, table types, SQL info, XDBC type info),
//! and logins by basic auth, answered with a bearer token.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, LazyLock, Mutex};
use std::time::{Duration, Instant};

use arrow_flight::decode::FlightRecordBatchStream;
use arrow_flight::encode::FlightDataEncoderBuilder;
use arrow_flight::error::FlightError;
use arrow_flight::flight_service_server::FlightService;
use arrow_flight::sql::metadata::{
    SqlInfoData, SqlInfoDataBuilder, XdbcTypeInfo, XdbcTypeInfoData, XdbcTypeInfoDataBuilder,
};
use arrow_flight::sql::server::{FlightSqlService, PeekableFlightDataStream};
use arrow_flight::sql::{
    ActionClosePreparedStatementRequest, ActionCreatePreparedStatementRequest,
    ActionCreatePreparedStatementResult, CommandGetCatalogs, CommandGetDbSchemas,
    CommandGetSqlInfo, CommandGetTableTypes, CommandGetTables, CommandGetXdbcTypeInfo,
    CommandPreparedStatementQuery, CommandStatementQuery, DoPutPreparedStatementResult, Nullable,
    ProstMessageExt, Searchable, SqlInfo, TicketStatementQuery, XdbcDataType,
};
use arrow_flight::{
    Action, FlightDescriptor, FlightEndpoint, FlightInfo, HandshakeRequest, HandshakeResponse,
    IpcMessage, SchemaAsIpc, Ticket,
};
use base64::Engine as _;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use datafusion::arrow::datatypes::Schema;
use datafusion::arrow::ipc::writer::IpcWriteOptions;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::error::DataFusionError;
use datafusion::prelude::SessionContext;
use futures::{Stream, TryStreamExt};
use prost::Message;
use tonic::metadata::MetadataMap;
use tonic::{Request, Response, Status, Streaming};

use crate::engine::guard::{Access, plan_user_sql};
use crate::error::Error;
use crate::sql_server::catalog::CATALOG;
use crate::sql_server::limits::{QueryLimits, statement_timeout, timeout_error, with_deadline};
use crate::sql_server::prepared::{PreparedHandle, parameter_schema};
use crate::sql_server::users::{FailedLogins, Users};

type DoGetStream = <FlightSql as FlightService>::DoGetStream;

/// Basic auth's base64, padded or not (Go's Flight client, under ADBC, sends it unpadded).
const BASIC: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// How long a bearer token from the handshake stays valid.
const TOKEN_LIFETIME: Duration = Duration::from_secs(12 * 3600);

/// The Flight SQL service.
pub struct FlightSql {
    base: Arc<SessionContext>,
    limits: QueryLimits,
    /// `None` with `--no-auth`.
    logins: Option<Logins>,
}

/// Users, the tokens handed out, and failed logins per address.
struct Logins {
    users: Arc<Users>,
    tokens: Mutex<HashMap<String, (String, Instant)>>,
    failed: Arc<FailedLogins>,
}

impl FlightSql {
    pub fn new(
        base: Arc<SessionContext>,
        limits: QueryLimits,
        users: Option<Arc<Users>>,
        failed: Arc<FailedLogins>,
    ) -> FlightSql {
        FlightSql {
            base,
            limits,
            logins: users.map(|users| Logins {
                users,
                tokens: Mutex::new(HashMap::new()),
                failed,
            }),
        }
    }

    /// The caller's user: from a bearer token of the handshake, or basic auth on this call.
    fn authorize<T>(&self, request: &Request<T>) -> Result<String, Status> {
        let Some(logins) = &self.logins else {
            return Ok(String::new());
        };
        let header = authorization(request.metadata())?;
        if let Some(token) = header.strip_prefix("Bearer ") {
            let tokens = logins.tokens.lock().expect("lock");
            return match tokens.get(token) {
                Some((user, issued)) if issued.elapsed() < TOKEN_LIFETIME => Ok(user.clone()),
                _ => Err(Status::unauthenticated(
                    "the bearer token is unknown or expired: log in again (basic auth)",
                )),
            };
        }
        logins.basic(header, request.remote_addr())
    }
}

impl Logins {
    /// Check `Basic <base64 user:password>`, with the failed-login limit of `peer`'s address.
    fn basic(&self, header: &str, peer: Option<SocketAddr>) -> Result<String, Status> {
        let address = peer.map(|p| p.ip().to_string()).unwrap_or_default();
        if let Some(wait) = self.failed.locked_for(&address, Instant::now()) {
            return Err(Status::unauthenticated(format!(
                "too many failed logins from this address; try again in {} s",
                wait.as_secs() + 1
            )));
        }
        let decoded = header
            .strip_prefix("Basic ")
            .and_then(|b| BASIC.decode(b.trim()).ok())
            .and_then(|b| String::from_utf8(b).ok())
            .ok_or_else(|| {
                Status::unauthenticated(
                    "expected `authorization: Basic <user:password>` or a bearer token",
                )
            })?;
        let (user, password) = decoded.split_once(':').unwrap_or((&decoded, ""));
        if self.users.check(user, password) {
            return Ok(user.to_string());
        }
        tracing::warn!(user = %user, address = %address, "flight login failed: wrong user or password");
        self.failed.record(&address, Instant::now());
        Err(Status::unauthenticated(format!(
            "password authentication failed for user \"{user}\""
        )))
    }
}

fn authorization(metadata: &MetadataMap) -> Result<&str, Status> {
    metadata
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| {
            Status::unauthenticated(
                "login required: basic auth, or the bearer token the handshake returns",
            )
        })
}

impl FlightSql {
    /// Plan the handle's SQL under the read-only guard in a session of its own (latest table
    /// versions), with its bound parameters, if any.
    async fn plan(
        &self,
        handle: &PreparedHandle,
    ) -> Result<(SessionContext, datafusion::prelude::DataFrame), Status> {
        let ctx = self.limits.session(&self.base).map_err(df_status)?;
        let df = plan_user_sql(&ctx, &handle.sql, Access::ReadOnly)
            .await
            .map_err(error_status)?;
        let df = handle.apply(df).map_err(df_status)?;
        Ok((ctx, df))
    }

    /// Run the handle's statement and stream its batches, ended by the statement timeout.
    async fn stream(&self, handle: &PreparedHandle) -> Result<Response<DoGetStream>, Status> {
        let timeout = self.limits.timeout(None);
        let deadline = tokio::time::Instant::now() + timeout;
        let started = tokio::time::timeout_at(deadline, async {
            let (_ctx, df) = self.plan(handle).await?;
            let schema = Arc::new(wire_schema(df.schema().as_arrow()));
            let batches = df.execute_stream().await.map_err(df_status)?;
            Ok::<_, Status>((schema, batches))
        })
        .await
        .map_err(|_| df_status(timeout_error(timeout)))??;
        let (schema, batches) = started;
        let batches = with_deadline(batches, deadline, timeout)
            .map_err(|e| FlightError::Tonic(Box::new(df_status(e))));
        let flight = FlightDataEncoderBuilder::new()
            .with_schema(schema)
            .build(batches)
            .map_err(Status::from);
        Ok(Response::new(Box::pin(flight)))
    }

    /// FlightInfo for `schema`, fetched with `ticket`.
    fn info(
        schema: &Schema,
        ticket: Vec<u8>,
        descriptor: FlightDescriptor,
    ) -> Result<Response<FlightInfo>, Status> {
        let endpoint = FlightEndpoint::new().with_ticket(Ticket::new(ticket));
        let info = FlightInfo::new()
            .try_with_schema(schema)
            .map_err(|e| Status::internal(e.to_string()))?
            .with_endpoint(endpoint)
            .with_descriptor(descriptor);
        Ok(Response::new(info))
    }

    /// FlightInfo for a catalog command (GetTables, GetSqlInfo, ...): its result `schema`, and
    /// the command itself as the ticket, after the caller's login is checked.
    fn command_info(
        &self,
        schema: &Schema,
        command: &impl ProstMessageExt,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        self.authorize(&request)?;
        Self::info(
            schema,
            command.as_any().encode_to_vec(),
            request.into_inner(),
        )
    }

    /// Every table of the served catalog, with its type and schema (pg_catalog left out).
    async fn tables(&self) -> Result<Vec<(String, String, &'static str, Schema)>, Status> {
        let catalog = self
            .base
            .catalog(CATALOG)
            .ok_or_else(|| Status::internal("the served catalog is missing"))?;
        let mut out = vec![];
        for schema_name in catalog.schema_names() {
            if schema_name == "pg_catalog" {
                continue;
            }
            let Some(schema) = catalog.schema(&schema_name) else {
                continue;
            };
            for table_name in schema.table_names() {
                if let Some(table) = schema.table(&table_name).await.map_err(df_status)? {
                    let kind = match table.table_type() {
                        datafusion::logical_expr::TableType::View => "VIEW",
                        _ => "TABLE",
                    };
                    out.push((
                        schema_name.clone(),
                        table_name,
                        kind,
                        table.schema().as_ref().clone(),
                    ));
                }
            }
        }
        Ok(out)
    }
}

/// The schema a result has on the wire: the encoder sends dictionary columns (Delta partition
/// columns) as their values, so FlightInfo and prepared statements must announce the same.
fn wire_schema(schema: &Schema) -> Schema {
    let fields: Vec<datafusion::arrow::datatypes::FieldRef> = schema
        .fields()
        .iter()
        .map(|f| match f.data_type() {
            datafusion::arrow::datatypes::DataType::Dictionary(_, values) => {
                Arc::new(f.as_ref().clone().with_data_type(values.as_ref().clone()))
            }
            _ => f.clone(),
        })
        .collect();
    Schema::new_with_metadata(fields, schema.metadata().clone())
}

/// One batch as a DoGet stream.
fn batch_stream(batch: RecordBatch) -> Response<DoGetStream> {
    let schema = batch.schema();
    let flight = FlightDataEncoderBuilder::new()
        .with_schema(schema)
        .build(futures::stream::iter([Ok(batch)]))
        .map_err(Status::from);
    Response::new(Box::pin(flight))
}

fn arrow_status(e: impl std::fmt::Display) -> Status {
    Status::internal(e.to_string())
}

/// A DataFusion error as a gRPC status.
fn df_status(e: DataFusionError) -> Status {
    if let Some(timeout) = statement_timeout(&e) {
        return Status::deadline_exceeded(timeout.to_string());
    }
    let message = crate::engine::job::strip_context(&e);
    match e.find_root() {
        DataFusionError::ResourcesExhausted(_) => Status::resource_exhausted(message),
        DataFusionError::SQL(..) | DataFusionError::Plan(_) | DataFusionError::SchemaError(..) => {
            Status::invalid_argument(message)
        }
        _ => Status::internal(message),
    }
}

fn error_status(e: Error) -> Status {
    match e {
        Error::ReadOnly { message } => Status::permission_denied(format!(
            "{message}: the SQL endpoint serves the curated tables read-only"
        )),
        Error::DataFusion(e) => df_status(e),
        other => Status::internal(other.to_string()),
    }
}

/// What `GetSqlInfo` answers: a read-only SQL server named retention.
static SQL_INFO: LazyLock<SqlInfoData> = LazyLock::new(|| {
    let mut info = SqlInfoDataBuilder::new();
    info.append(SqlInfo::FlightSqlServerName, "retention");
    info.append(SqlInfo::FlightSqlServerVersion, env!("CARGO_PKG_VERSION"));
    info.append(SqlInfo::FlightSqlServerArrowVersion, "59.3");
    info.append(SqlInfo::FlightSqlServerReadOnly, true);
    info.append(SqlInfo::FlightSqlServerSql, true);
    info.append(SqlInfo::FlightSqlServerSubstrait, false);
    info.append(SqlInfo::FlightSqlServerTransaction, 0i32);
    info.append(SqlInfo::FlightSqlServerCancel, false);
    info.append(SqlInfo::FlightSqlServerStatementTimeout, 0i32);
    info.append(SqlInfo::SqlDdlCatalog, false);
    info.append(SqlInfo::SqlDdlSchema, false);
    info.append(SqlInfo::SqlDdlTable, false);
    info.append(SqlInfo::SqlIdentifierQuoteChar, "\"");
    info.append(SqlInfo::SqlQuotedIdentifierCase, 3i32);
    info.append(SqlInfo::SqlIdentifierCase, 2i32);
    info.build().expect("static SQL info builds")
});

/// What `GetXdbcTypeInfo` answers: the types curated tables use.
static XDBC_TYPES: LazyLock<XdbcTypeInfoData> = LazyLock::new(|| {
    let mut types = XdbcTypeInfoDataBuilder::new();
    let named =
        |name: &str, data_type: XdbcDataType, size: Option<i32>, fixed: bool| XdbcTypeInfo {
            type_name: name.into(),
            data_type,
            column_size: size,
            literal_prefix: None,
            literal_suffix: None,
            create_params: None,
            nullable: Nullable::NullabilityNullable,
            case_sensitive: matches!(data_type, XdbcDataType::XdbcVarchar),
            searchable: Searchable::Full,
            unsigned_attribute: Some(false),
            fixed_prec_scale: fixed,
            auto_increment: Some(false),
            local_type_name: Some(name.into()),
            minimum_scale: None,
            maximum_scale: None,
            sql_data_type: data_type,
            datetime_subcode: None,
            num_prec_radix: None,
            interval_precision: None,
        };
    types.append(named("BOOLEAN", XdbcDataType::XdbcBit, Some(1), false));
    types.append(named("INTEGER", XdbcDataType::XdbcInteger, Some(10), false));
    types.append(named("BIGINT", XdbcDataType::XdbcBigint, Some(19), false));
    types.append(named("DOUBLE", XdbcDataType::XdbcDouble, Some(15), false));
    types.append(XdbcTypeInfo {
        create_params: Some(vec!["precision".into(), "scale".into()]),
        minimum_scale: Some(0),
        maximum_scale: Some(38),
        num_prec_radix: Some(10),
        ..named("DECIMAL", XdbcDataType::XdbcDecimal, Some(38), true)
    });
    types.append(XdbcTypeInfo {
        literal_prefix: Some("'".into()),
        literal_suffix: Some("'".into()),
        ..named("VARCHAR", XdbcDataType::XdbcVarchar, Some(i32::MAX), false)
    });
    types.append(named("DATE", XdbcDataType::XdbcDate, Some(10), false));
    types.append(named(
        "TIMESTAMP",
        XdbcDataType::XdbcTimestamp,
        Some(32),
        false,
    ));
    types.build().expect("static XDBC types build")
});

#[tonic::async_trait]
impl FlightSqlService for FlightSql {
    type FlightService = FlightSql;

    async fn do_handshake(
        &self,
        request: Request<Streaming<HandshakeRequest>>,
    ) -> Result<
        Response<Pin<Box<dyn Stream<Item = Result<HandshakeResponse, Status>> + Send>>>,
        Status,
    > {
        let token = match &self.logins {
            None => String::new(),
            Some(logins) => {
                let header = authorization(request.metadata())?;
                let user = logins.basic(header, request.remote_addr())?;
                let token = uuid::Uuid::new_v4().simple().to_string();
                logins
                    .tokens
                    .lock()
                    .expect("lock")
                    .insert(token.clone(), (user, Instant::now()));
                token
            }
        };
        let answer = HandshakeResponse {
            protocol_version: 0,
            payload: token.clone().into(),
        };
        let mut response: Response<Pin<Box<dyn Stream<Item = _> + Send>>> =
            Response::new(Box::pin(futures::stream::iter([Ok(answer)])));
        if !token.is_empty() {
            let value = format!("Bearer {token}")
                .parse()
                .map_err(|_| Status::internal("token header"))?;
            response.metadata_mut().insert("authorization", value);
        }
        Ok(response)
    }

    async fn get_flight_info_statement(
        &self,
        query: CommandStatementQuery,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        self.authorize(&request)?;
        let (_ctx, df) = self
            .plan(&PreparedHandle::new(query.query.as_str()))
            .await?;
        let ticket = TicketStatementQuery {
            statement_handle: query.query.into_bytes().into(),
        };
        Self::info(
            &wire_schema(df.schema().as_arrow()),
            ticket.as_any().encode_to_vec(),
            request.into_inner(),
        )
    }

    async fn do_get_statement(
        &self,
        ticket: TicketStatementQuery,
        request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        self.authorize(&request)?;
        let sql = String::from_utf8(ticket.statement_handle.to_vec())
            .map_err(|_| Status::invalid_argument("the statement handle is not UTF-8"))?;
        self.stream(&PreparedHandle::new(sql)).await
    }

    async fn do_action_create_prepared_statement(
        &self,
        query: ActionCreatePreparedStatementRequest,
        request: Request<Action>,
    ) -> Result<ActionCreatePreparedStatementResult, Status> {
        self.authorize(&request)?;
        let (_ctx, df) = self
            .plan(&PreparedHandle::new(query.query.as_str()))
            .await?;
        let options = IpcWriteOptions::default();
        let schema = wire_schema(df.schema().as_arrow());
        let IpcMessage(dataset_schema) = SchemaAsIpc::new(&schema, &options)
            .try_into()
            .map_err(arrow_status)?;
        let parameters = parameter_schema(&df).map_err(df_status)?;
        let IpcMessage(parameter_schema) = SchemaAsIpc::new(&parameters, &options)
            .try_into()
            .map_err(arrow_status)?;
        Ok(ActionCreatePreparedStatementResult {
            prepared_statement_handle: query.query.into_bytes().into(),
            dataset_schema,
            parameter_schema,
        })
    }

    async fn do_action_close_prepared_statement(
        &self,
        _query: ActionClosePreparedStatementRequest,
        request: Request<Action>,
    ) -> Result<(), Status> {
        self.authorize(&request)?;
        Ok(())
    }

    async fn get_flight_info_prepared_statement(
        &self,
        cmd: CommandPreparedStatementQuery,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        self.authorize(&request)?;
        let handle = PreparedHandle::decode(&cmd.prepared_statement_handle).map_err(df_status)?;
        let (_ctx, df) = self.plan(&handle).await?;
        Self::info(
            &wire_schema(df.schema().as_arrow()),
            cmd.as_any().encode_to_vec(),
            request.into_inner(),
        )
    }

    async fn do_get_prepared_statement(
        &self,
        cmd: CommandPreparedStatementQuery,
        request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        self.authorize(&request)?;
        let handle = PreparedHandle::decode(&cmd.prepared_statement_handle).map_err(df_status)?;
        self.stream(&handle).await
    }

    /// Bind a row of parameters: answered with the updated handle that carries them.
    async fn do_put_prepared_statement_query(
        &self,
        cmd: CommandPreparedStatementQuery,
        request: Request<PeekableFlightDataStream>,
    ) -> Result<DoPutPreparedStatementResult, Status> {
        self.authorize(&request)?;
        let handle = PreparedHandle::decode(&cmd.prepared_statement_handle).map_err(df_status)?;
        let batches: Vec<RecordBatch> = FlightRecordBatchStream::new_from_flight_data(
            request.into_inner().map_err(FlightError::from),
        )
        .try_collect()
        .await
        .map_err(|e| Status::invalid_argument(format!("reading the parameters: {e}")))?;
        let batch = match batches.as_slice() {
            [one] => one.clone(),
            _ => datafusion::arrow::compute::concat_batches(
                &batches
                    .first()
                    .map(|b| b.schema())
                    .unwrap_or_else(|| Arc::new(Schema::empty())),
                &batches,
            )
            .map_err(arrow_status)?,
        };
        let bound = handle.bind(batch).map_err(df_status)?;
        // Planned now, so a wrong number or type of parameters fails at bind time.
        self.plan(&bound).await?;
        Ok(DoPutPreparedStatementResult {
            prepared_statement_handle: Some(bound.encode().map_err(df_status)?.into()),
        })
    }

    async fn get_flight_info_catalogs(
        &self,
        query: CommandGetCatalogs,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        self.command_info(&query.into_builder().schema(), &query, request)
    }

    async fn do_get_catalogs(
        &self,
        query: CommandGetCatalogs,
        request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        self.authorize(&request)?;
        let mut builder = query.into_builder();
        builder.append(CATALOG);
        Ok(batch_stream(builder.build().map_err(arrow_status)?))
    }

    async fn get_flight_info_schemas(
        &self,
        query: CommandGetDbSchemas,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        self.command_info(&query.clone().into_builder().schema(), &query, request)
    }

    async fn do_get_schemas(
        &self,
        query: CommandGetDbSchemas,
        request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        self.authorize(&request)?;
        let mut builder = query.into_builder();
        let catalog = self
            .base
            .catalog(CATALOG)
            .ok_or_else(|| Status::internal("the served catalog is missing"))?;
        for schema in catalog.schema_names() {
            if schema != "pg_catalog" {
                builder.append(CATALOG, schema);
            }
        }
        Ok(batch_stream(builder.build().map_err(arrow_status)?))
    }

    async fn get_flight_info_tables(
        &self,
        query: CommandGetTables,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        self.command_info(&query.clone().into_builder().schema(), &query, request)
    }

    async fn do_get_tables(
        &self,
        query: CommandGetTables,
        request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        self.authorize(&request)?;
        let mut builder = query.into_builder();
        for (schema, table, kind, table_schema) in self.tables().await? {
            builder
                .append(CATALOG, schema, table, kind, &table_schema)
                .map_err(|e| Status::internal(e.to_string()))?;
        }
        Ok(batch_stream(builder.build().map_err(arrow_status)?))
    }

    async fn get_flight_info_table_types(
        &self,
        query: CommandGetTableTypes,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        self.command_info(&query.into_builder().schema(), &query, request)
    }

    async fn do_get_table_types(
        &self,
        query: CommandGetTableTypes,
        request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        self.authorize(&request)?;
        let mut builder = query.into_builder();
        builder.append("TABLE");
        builder.append("VIEW");
        Ok(batch_stream(builder.build().map_err(arrow_status)?))
    }

    async fn get_flight_info_sql_info(
        &self,
        query: CommandGetSqlInfo,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        self.command_info(
            &query.clone().into_builder(&SQL_INFO).schema(),
            &query,
            request,
        )
    }

    async fn do_get_sql_info(
        &self,
        query: CommandGetSqlInfo,
        request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        self.authorize(&request)?;
        let batch = query
            .into_builder(&SQL_INFO)
            .build()
            .map_err(arrow_status)?;
        Ok(batch_stream(batch))
    }

    async fn get_flight_info_xdbc_type_info(
        &self,
        query: CommandGetXdbcTypeInfo,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        self.command_info(&query.into_builder(&XDBC_TYPES).schema(), &query, request)
    }

    async fn do_get_xdbc_type_info(
        &self,
        query: CommandGetXdbcTypeInfo,
        request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        self.authorize(&request)?;
        let batch = query
            .into_builder(&XDBC_TYPES)
            .build()
            .map_err(arrow_status)?;
        Ok(batch_stream(batch))
    }

    async fn register_sql_info(&self, _id: i32, _result: &SqlInfo) {}
}
