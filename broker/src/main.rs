//! `mq-broker`: name server, broker, or both in one process (standalone).
//!
//! Defaults follow Apache RocketMQ so stock clients and habits work: name server on 9876,
//! broker on 10911 plus the VIP channel on 10909, store in `$HOME/store`.

mod admin_cli;
mod bench;
mod cli;
mod client_cli;
mod run;
mod settings;

use clap::Parser;

fn main() -> anyhow::Result<()> {
    let cli = cli::Cli::parse();
    cli::init_tracing(cli.log_format);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        match cli.mode {
            cli::Mode::Admin(args) => admin_cli::run(args).await,
            cli::Mode::Bench(args) => bench::run(args).await,
            cli::Mode::Produce(args) => client_cli::produce(args).await,
            cli::Mode::Consume(args) => client_cli::consume(args).await,
            mode => run::run(mode).await,
        }
    })
}
