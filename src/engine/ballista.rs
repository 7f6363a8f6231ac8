//! Distributed execution on Apache DataFusion Ballista: the client context
//! of `engine: {kind: ballista}`, and the scheduler and executor that
//! `crmflow scheduler` / `crmflow executor` start through Ballista's own
//! library entry points (`start_server`, `start_executor_process`) — not a
//! reimplementation.
//!
//! Every node is built from the same three pieces, so a plan the client
//! makes can be planned on the scheduler and run on any executor:
//!
//! - the **functions**: Ballista's defaults plus crmflow's stateless scalar
//!   functions, registered by name ([`cluster_state`], [`function_registry`]).
//!   A plan refers to a function by name; its fitted parameters are literal
//!   arguments, so nothing but the name has to exist on the node.
//! - the **storage configuration**: the pipeline's `storage:` options travel
//!   inside the job's session config, in a config extension of their own
//!   ([`StorageOptions`], keys `crmflow_storage.<option>`), the same way
//!   Ballista ships its own `s3.*` options (`ballista_core::object_store`).
//!   Ballista sends every session config entry to the scheduler with the job
//!   and to the executors with each task.
//! - the **object stores**: each node's runtime has a [`storage::StoreRegistry`] that
//!   builds the store for a URL the first time a plan touches it, from the
//!   node's own environment (`AWS_*`, `GOOGLE_*`, `AZURE_*`, instance
//!   credentials) with the job's storage options on top — exactly what
//!   [`storage::build_store`] does for the local engine. The scheduler needs
//!   them too: it lists the files of every scan when it plans a job.
//!
//! Standalone mode ([`Cluster::standalone`]) runs the same scheduler and
//! executor in this process, with a work directory of its own that is
//! removed with the engine.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;

use ballista::prelude::SessionContextExt;
use ballista_core::config::TaskSchedulingPolicy;
use ballista_core::extension::{
    SessionConfigExt, ballista_aggregate_functions, ballista_scalar_functions, ballista_window_functions,
};
use ballista_core::registry::BallistaFunctionRegistry;
use ballista_core::{ConfigProducer, RuntimeProducer};
use ballista_executor::executor_process::{ExecutorProcessConfig, start_executor_process};
use ballista_scheduler::cluster::BallistaCluster;
use ballista_scheduler::config::SchedulerConfig;
use datafusion::common::config::{ConfigEntry, ConfigExtension, ExtensionOptions};
use datafusion::execution::runtime_env::{RuntimeEnv, RuntimeEnvBuilder};
use datafusion::execution::{SessionState, SessionStateBuilder};
use datafusion::prelude::{SessionConfig, SessionContext};

use super::Functions;
use crate::storage;

/// The pipeline's `storage:` options as a session config extension, so
/// that they reach the scheduler and every executor with the job. Values
/// are never shown (`Debug` lists the keys only).
#[derive(Clone, Default)]
pub struct StorageOptions(pub BTreeMap<String, String>);

impl std::fmt::Debug for StorageOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("StorageOptions")
            .field(&self.0.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl ExtensionOptions for StorageOptions {
    fn as_any(&self) -> &dyn std::any::Any {
        self
    }

    fn as_any_mut(&mut self) -> &mut dyn std::any::Any {
        self
    }

    fn cloned(&self) -> Box<dyn ExtensionOptions> {
        Box::new(self.clone())
    }

    fn set(&mut self, key: &str, value: &str) -> datafusion::error::Result<()> {
        self.0.insert(key.to_string(), value.to_string());
        Ok(())
    }

    fn entries(&self) -> Vec<ConfigEntry> {
        self.0
            .iter()
            .map(|(k, v)| ConfigEntry {
                key: format!("{}.{k}", Self::PREFIX),
                value: Some(v.clone()),
                description: "an object-store option of the pipeline's storage block",
            })
            .collect()
    }
}

impl ConfigExtension for StorageOptions {
    const PREFIX: &'static str = "crmflow_storage";
}

/// The storage options a session config carries (none if it has no
/// [`StorageOptions`]).
pub fn storage_options(config: &SessionConfig) -> BTreeMap<String, String> {
    config
        .options()
        .extensions
        .get::<StorageOptions>()
        .map(|o| o.0.clone())
        .unwrap_or_default()
}

/// A runtime whose object stores come from the config's storage options
/// ([`storage::StoreRegistry`]); spill files go to `temp_dir` when given.
///
/// # Errors
/// DataFusion's, when the runtime cannot be built.
pub fn runtime(
    config: &SessionConfig,
    temp_dir: Option<&str>,
    memory_limit: Option<u64>,
) -> datafusion::error::Result<Arc<RuntimeEnv>> {
    let mut builder = RuntimeEnvBuilder::new()
        .with_object_store_registry(Arc::new(storage::StoreRegistry::new(storage_options(config))));
    if let Some(dir) = temp_dir {
        builder = builder.with_temp_file_path(dir);
    }
    if let Some(bytes) = memory_limit {
        builder = builder.with_memory_limit(bytes as usize, 1.0);
    }
    builder.build_arc()
}

/// The session config every node starts from: Ballista's (which switches
/// off what does not distribute: round-robin repartitioning, string views,
/// dynamic filters, physical scalar subqueries) plus an empty
/// [`StorageOptions`] for the job's options to land in.
pub fn base_config() -> SessionConfig {
    SessionConfig::new_with_ballista()
        .with_information_schema(false)
        .with_create_default_catalog_and_schema(true)
        .with_option_extension(StorageOptions::default())
}

/// A session state with Ballista's functions and crmflow's `functions`,
/// Ballista's optimizer rules, on `runtime`: what the scheduler plans with
/// and what the standalone client starts from.
pub fn cluster_state(config: SessionConfig, runtime: Arc<RuntimeEnv>, functions: &Functions) -> SessionState {
    let mut scalars = ballista_scalar_functions();
    scalars.extend(functions.scalar.iter().cloned().map(Arc::new));
    let mut aggregates = ballista_aggregate_functions();
    aggregates.extend(functions.aggregate.iter().cloned().map(Arc::new));
    let state = SessionStateBuilder::new()
        .with_default_features()
        .with_config(config)
        .with_runtime_env(runtime)
        .with_optimizer_rules(super::optimizer_rules(
            ballista_core::optimizer::ballista_default_optimizer_rules(),
        ))
        .with_scalar_functions(scalars)
        .with_aggregate_functions(aggregates)
        .with_window_functions(ballista_window_functions())
        .build();
    with_rewrites(state)
}

/// `state` with crmflow's expression rewrites ([`super::dates::UtcDate`]).
fn with_rewrites(mut state: SessionState) -> SessionState {
    use datafusion::execution::FunctionRegistry;
    // Registering a rewrite cannot fail (the trait's default is an error
    // only for registries without an analyzer).
    let _ = state.register_function_rewrite(Arc::new(super::dates::UtcDate));
    state
}

/// The functions an executor decodes plans with: Ballista's and crmflow's.
pub fn function_registry(functions: &Functions) -> Arc<BallistaFunctionRegistry> {
    let state = cluster_state(base_config(), Arc::new(RuntimeEnv::default()), functions);
    Arc::new(BallistaFunctionRegistry::from(&state))
}

/// The scheduler's session builder: the job's config (with its storage
/// options) on a runtime with a [`storage::StoreRegistry`].
fn session_builder(functions: Functions) -> ballista_scheduler::SessionBuilder {
    Arc::new(move |config: SessionConfig| {
        let runtime = runtime(&config, None, None)?;
        Ok(cluster_state(config, runtime, &functions))
    })
}

/// How `crmflow scheduler` runs.
#[derive(Debug, Clone)]
pub struct SchedulerOptions {
    pub bind: SocketAddr,
    /// The host executors and clients reach the scheduler at.
    pub external_host: Option<String>,
    /// Seconds without a heartbeat after which an executor is dead and its
    /// tasks and shuffle output are scheduled again elsewhere.
    pub executor_timeout_seconds: u64,
}

fn scheduler_config(opts: &SchedulerOptions, functions: &Functions) -> SchedulerConfig {
    let producer: ConfigProducer = Arc::new(base_config);
    let mut config = SchedulerConfig::default()
        .with_scheduler_policy(TaskSchedulingPolicy::PushStaged)
        .with_override_config_producer(producer)
        .with_override_session_builder(session_builder(functions.clone()));
    config.bind_host = opts.bind.ip().to_string();
    config.bind_port = opts.bind.port();
    config.external_host = opts.external_host.clone().unwrap_or_else(|| opts.bind.ip().to_string());
    config.executor_timeout_seconds = opts.executor_timeout_seconds;
    config.no_executors_grace_period_seconds = opts.executor_timeout_seconds;
    config.expire_dead_executor_interval_seconds = (opts.executor_timeout_seconds / 2).clamp(1, 15);
    config
}

/// Runs a Ballista scheduler with crmflow's functions and object stores
/// until the process is stopped.
///
/// # Errors
/// Ballista's, e.g. the address is in use.
pub async fn serve_scheduler(opts: &SchedulerOptions, functions: Functions) -> Result<(), String> {
    let config = scheduler_config(opts, &functions);
    let cluster = BallistaCluster::new_from_config(&config)
        .await
        .map_err(|e| e.to_string())?;
    ballista_scheduler::scheduler_process::start_server(cluster, opts.bind, Arc::new(config))
        .await
        .map_err(|e| e.to_string())
}

/// How `crmflow executor` runs.
#[derive(Debug, Clone)]
pub struct ExecutorOptions {
    /// `host:port` of the scheduler.
    pub scheduler_host: String,
    pub scheduler_port: u16,
    /// Where the Arrow Flight service (shuffle and result fetches) listens.
    pub bind: SocketAddr,
    /// The port (on the same host) of the gRPC service the scheduler
    /// pushes tasks to.
    pub grpc_port: u16,
    /// The host other executors and the client reach this one at.
    pub external_host: Option<String>,
    /// Tasks run at once (0: the number of cores).
    pub concurrent_tasks: usize,
    /// Shuffle files; default a new temporary directory.
    pub work_dir: Option<String>,
    /// Memory for all tasks together (spilling past it); default Ballista's
    /// (a share of the host's or cgroup's memory).
    pub memory_limit: Option<u64>,
    /// Seconds to keep trying to reach the scheduler at start.
    pub connect_timeout_seconds: u16,
}

/// Seconds between an executor's heartbeats to the scheduler.
pub const HEARTBEAT_SECONDS: u64 = 2;

fn executor_config(opts: &ExecutorOptions, functions: &Functions) -> ExecutorProcessConfig {
    let work_dir = opts.work_dir.clone();
    let runtime_producer: RuntimeProducer =
        Arc::new(move |config: &SessionConfig| runtime(config, work_dir.as_deref(), None));
    let config_producer: ConfigProducer = Arc::new(base_config);
    ExecutorProcessConfig {
        bind_host: opts.bind.ip().to_string(),
        port: opts.bind.port(),
        grpc_port: opts.grpc_port,
        external_host: opts.external_host.clone(),
        scheduler_host: opts.scheduler_host.clone(),
        scheduler_port: opts.scheduler_port,
        scheduler_connect_timeout_seconds: opts.connect_timeout_seconds,
        vcores: opts.concurrent_tasks,
        task_scheduling_policy: TaskSchedulingPolicy::PushStaged,
        work_dir: opts.work_dir.clone(),
        memory_pool_size: opts.memory_limit,
        // Often enough for a short --executor-timeout on the scheduler.
        executor_heartbeat_interval_seconds: HEARTBEAT_SECONDS,
        // Shuffle files of finished jobs go after an hour.
        job_data_ttl_seconds: 3600,
        job_data_clean_up_interval_seconds: 600,
        override_function_registry: Some(function_registry(functions)),
        override_runtime_producer: Some(runtime_producer),
        override_config_producer: Some(config_producer),
        ..Default::default()
    }
}

/// Runs a Ballista executor with crmflow's functions and object stores
/// until SIGINT/SIGTERM (it then drains its running tasks).
///
/// # Errors
/// Ballista's, e.g. the scheduler cannot be reached.
pub async fn serve_executor(opts: &ExecutorOptions, functions: Functions) -> Result<(), String> {
    // Ballista binds its ports only after registering with the scheduler;
    // an executor that then fails to bind may already have been given
    // tasks. Find a taken port before saying hello.
    for addr in [opts.bind, SocketAddr::new(opts.bind.ip(), opts.grpc_port)] {
        std::net::TcpListener::bind(addr).map_err(|e| format!("cannot listen on {addr}: {e}"))?;
    }
    let config = executor_config(opts, &functions);
    start_executor_process(Arc::new(config))
        .await
        .map_err(|e| e.to_string())
}

/// A connected Ballista client context, and for standalone mode the
/// in-process cluster behind it.
pub struct Cluster {
    pub ctx: SessionContext,
    /// The standalone executor's work directory (removed on drop).
    _work_dir: Option<tempfile::TempDir>,
}

impl Cluster {
    /// The client of a remote scheduler at `df://host:port`.
    ///
    /// # Errors
    /// The context cannot be built (Ballista's message).
    pub async fn remote(url: &str, config: SessionConfig, functions: &Functions) -> Result<Cluster, String> {
        let runtime = runtime(&config, None, None).map_err(|e| e.to_string())?;
        let state = client_state(config, runtime);
        let ctx = SessionContext::remote_with_state(url, state)
            .await
            .map_err(|e| e.to_string())?;
        functions.register(&ctx);
        Ok(Cluster { ctx, _work_dir: None })
    }

    /// A scheduler and one executor with `concurrent_tasks` slots in this
    /// process, and the client of that scheduler.
    ///
    /// # Errors
    /// The scheduler or executor cannot start.
    pub async fn standalone(
        config: SessionConfig,
        functions: &Functions,
        concurrent_tasks: usize,
        memory_limit: Option<u64>,
    ) -> Result<Cluster, String> {
        let runtime = runtime(&config, None, memory_limit).map_err(|e| e.to_string())?;
        // Ports free when asked; the scheduler and executor bind them right
        // after.
        let [scheduler_port, flight_port, grpc_port] = free_ports::<3>()?;
        let local = std::net::IpAddr::from([127, 0, 0, 1]);
        let sched = SchedulerOptions {
            bind: SocketAddr::new(local, scheduler_port),
            external_host: Some("127.0.0.1".into()),
            executor_timeout_seconds: 180,
        };
        let config_of_scheduler = scheduler_config(&sched, functions);
        let cluster_state = BallistaCluster::new_from_config(&config_of_scheduler)
            .await
            .map_err(|e| format!("the in-process scheduler did not start: {e}"))?;
        tokio::spawn(async move {
            let served = ballista_scheduler::scheduler_process::start_server(
                cluster_state,
                sched.bind,
                Arc::new(config_of_scheduler),
            );
            if let Err(e) = served.await {
                tracing::error!("the in-process Ballista scheduler stopped: {e}");
            }
        });
        let work_dir = tempfile::Builder::new()
            .prefix("crmflow-ballista-")
            .tempdir()
            .map_err(|e| format!("no work directory for the in-process executor: {e}"))?;
        let opts = ExecutorOptions {
            scheduler_host: "127.0.0.1".into(),
            scheduler_port,
            bind: SocketAddr::new(local, flight_port),
            grpc_port,
            external_host: Some("127.0.0.1".into()),
            concurrent_tasks,
            work_dir: Some(work_dir.path().display().to_string()),
            memory_limit,
            connect_timeout_seconds: 30,
        };
        let mut executor = executor_config(&opts, functions);
        // The client and the executor share one runtime: the stores the
        // client registers (memory:// included) are the executor's too.
        let shared = runtime.clone();
        executor.override_runtime_producer = Some(Arc::new(move |_: &SessionConfig| Ok(shared.clone())));
        tokio::spawn(async move {
            if let Err(e) = start_executor_process(Arc::new(executor)).await {
                tracing::error!("the in-process Ballista executor stopped: {e}");
            }
        });
        // Both are spawned: the first query must not reach a port before it
        // listens (connection refused under load, push scheduling sends
        // tasks to the executor's gRPC port as soon as it has registered).
        for port in [scheduler_port, flight_port, grpc_port] {
            listening(SocketAddr::new(local, port), std::time::Duration::from_secs(60)).await?;
        }
        let state = client_state(config, runtime);
        let url = format!("df://127.0.0.1:{scheduler_port}");
        let ctx = SessionContext::remote_with_state(&url, state)
            .await
            .map_err(|e| e.to_string())?;
        functions.register(&ctx);
        Ok(Cluster {
            ctx,
            _work_dir: Some(work_dir),
        })
    }
}

/// Waits until `addr` accepts connections, at most `limit`.
async fn listening(addr: SocketAddr, limit: std::time::Duration) -> Result<(), String> {
    let start = std::time::Instant::now();
    loop {
        if tokio::net::TcpStream::connect(addr).await.is_ok() {
            return Ok(());
        }
        if start.elapsed() > limit {
            return Err(format!(
                "the in-process cluster did not listen on {addr} within {} s",
                limit.as_secs()
            ));
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// `N` distinct ports free on 127.0.0.1 right now.
fn free_ports<const N: usize>() -> Result<[u16; N], String> {
    // Held together, so that they differ.
    let listeners: Vec<std::net::TcpListener> = (0..N)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0"))
        .collect::<std::io::Result<_>>()
        .map_err(|e| format!("no free port for the in-process cluster: {e}"))?;
    let mut ports = [0u16; N];
    for (p, l) in ports.iter_mut().zip(&listeners) {
        *p = l.local_addr().map_err(|e| e.to_string())?.port();
    }
    Ok(ports)
}

/// The client's state before Ballista upgrades it (which replaces its
/// scalar functions: crmflow's are registered again after, [`register`]).
fn client_state(config: SessionConfig, runtime: Arc<RuntimeEnv>) -> SessionState {
    let state = SessionStateBuilder::new()
        .with_default_features()
        .with_config(config)
        .with_runtime_env(runtime)
        .with_optimizer_rules(super::optimizer_rules(datafusion::optimizer::Optimizer::new().rules))
        .build();
    with_rewrites(state)
}

#[cfg(test)]
mod tests {
    use datafusion::execution::object_store::ObjectStoreRegistry;
    use url::Url;

    use super::*;

    #[test]
    fn storage_options_travel_as_config_entries() {
        let opts = StorageOptions(BTreeMap::from([
            ("aws_endpoint".to_string(), "http://127.0.0.1:9000".to_string()),
            ("aws_secret_access_key".to_string(), "hunter2".to_string()),
        ]));
        let sent = base_config().with_option_extension(opts);
        // What Ballista does on the other side: a fresh base config, set
        // from the key-value pairs of the job.
        let mut got = base_config();
        for e in sent.options().entries() {
            if let Some(v) = e.value
                && e.key.starts_with("crmflow_storage.")
            {
                got.options_mut().set(&e.key, &v).unwrap();
            }
        }
        assert_eq!(storage_options(&got), storage_options(&sent));
        assert_eq!(storage_options(&got)["aws_endpoint"], "http://127.0.0.1:9000");
        assert!(!format!("{:?}", got.options().extensions.get::<StorageOptions>()).contains("hunter2"));
    }

    #[test]
    fn the_registry_builds_a_store_once_per_bucket() {
        let reg = storage::StoreRegistry::new(BTreeMap::new());
        let a = reg.get_store(&Url::parse("memory://reg-test/x/y").unwrap()).unwrap();
        let b = reg.get_store(&Url::parse("memory://reg-test/").unwrap()).unwrap();
        assert!(Arc::ptr_eq(&a, &b));
        assert!(reg.get_store(&Url::parse("file:///tmp/").unwrap()).is_ok());
        let err = reg.get_store(&Url::parse("ftp://host/").unwrap()).unwrap_err();
        assert!(err.to_string().contains("unsupported scheme"), "{err}");
    }
}
