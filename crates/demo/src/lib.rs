//! `sluice demo` (being written).

/// Flags of `sluice demo`.
#[derive(Debug, clap::Args)]
pub struct DemoArgs {}

/// What can stop a demo.
#[derive(Debug, thiserror::Error)]
#[error("not implemented yet")]
pub struct DemoError;

/// Runs the demo.
pub async fn run(_args: DemoArgs) -> Result<(), DemoError> {
    Err(DemoError)
}
