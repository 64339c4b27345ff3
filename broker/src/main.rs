//! `mq-broker`: name server, broker, or both in one process (standalone).
//!
//! Defaults follow Apache RocketMQ so stock clients and habits work: name server on 9876,
//! broker on 10911 plus the VIP channel on 10909, store in `$HOME/store`.

mod admin_cli;
mod bench;
mod cli;
mod messaging_cli;
mod run;
mod settings;

use clap::Parser;
use mq_broker::store::StoreError;
use mq_broker::store::termination::Termination;

fn main() -> anyhow::Result<()> {
    let cli = cli::Cli::parse();
    cli::init_tracing(cli.log_format);
    let termination_log = cli.termination_log.clone();
    let result = run(cli);
    if let (Err(e), Some(path)) = (&result, &termination_log) {
        let last_words = termination(e);
        if let Err(io) = last_words.write(path) {
            tracing::error!(path = %path.display(), error = %io, "cannot write the termination log");
        }
    }
    result
}

/// What a fatal error says in the termination log: the store's own kind when a store
/// error caused it, else `Fatal` with the whole chain.
fn termination(e: &anyhow::Error) -> Termination {
    match e.chain().find_map(|c| c.downcast_ref::<StoreError>()) {
        Some(store) => match Termination::from_store_error(store) {
            Termination::Fatal { .. } => Termination::fatal(format!("{e:#}")),
            t => t,
        },
        None => Termination::fatal(format!("{e:#}")),
    }
}

fn run(cli: cli::Cli) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        match cli.mode {
            cli::Mode::Admin(args) => admin_cli::run(args).await,
            cli::Mode::Bench(args) => bench::run(args).await,
            cli::Mode::Produce(args) => messaging_cli::produce(args).await,
            cli::Mode::Consume(args) => messaging_cli::consume(args).await,
            mode => run::run(mode).await,
        }
    })
}
