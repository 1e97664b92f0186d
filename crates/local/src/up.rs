//! `sluice up` and its control commands (being written).

/// Flags of `sluice up`.
#[derive(Debug, clap::Args)]
pub struct UpArgs {}

/// Flags of `sluice apply`.
#[derive(Debug, clap::Args)]
pub struct ApplyArgs {}

/// Flags of `sluice status`.
#[derive(Debug, clap::Args)]
pub struct StatusArgs {}

/// Flags of `sluice abort`.
#[derive(Debug, clap::Args)]
pub struct AbortArgs {}

/// Runs a fleet in the foreground.
pub async fn run_up(_args: UpArgs) -> Result<(), crate::LocalError> {
    unimplemented!()
}

/// Hands a changed fleet file to the running fleet.
pub async fn run_apply(_args: ApplyArgs) -> Result<(), crate::LocalError> {
    unimplemented!()
}

/// Prints the running fleet's status.
pub async fn run_status(_args: StatusArgs) -> Result<(), crate::LocalError> {
    unimplemented!()
}

/// Stops the running upgrade and returns traffic to the old revision.
pub async fn run_abort(_args: AbortArgs) -> Result<(), crate::LocalError> {
    unimplemented!()
}
