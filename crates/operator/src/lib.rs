//! sluice's Kubernetes platform: the `GracefulSet` custom resource and the
//! controller that upgrades it by calling `sluice_core::engine::decide` and
//! applying its actions to pods. See `docs/kubernetes.md`.

#![forbid(unsafe_code)]

pub mod controller;
pub mod crd;
pub mod evacuator;
pub mod kubectl;
pub mod pod;
pub mod revision;
pub mod run;
pub mod status;

pub use kubectl::{KubectlArgs, KubectlCommand};
pub use run::RunArgs;

/// `sluice operator …`.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum OperatorCommand {
    /// Run the controller (in cluster, or with --kubeconfig).
    Run(RunArgs),
    /// Print the GracefulSet CustomResourceDefinition as YAML.
    Crd,
}

/// Why `sluice operator` failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Running the controller failed.
    #[error(transparent)]
    Run(#[from] run::RunError),
    /// A plugin command failed.
    #[error(transparent)]
    Kubectl(#[from] kubectl::KubectlError),
    /// The CRD could not be written as YAML.
    #[error("cannot write the CRD as YAML: {0}")]
    Yaml(String),
}

/// Runs `sluice operator …`; returns what to print.
pub async fn run(command: OperatorCommand) -> Result<String, Error> {
    match command {
        OperatorCommand::Run(args) => {
            run::run(args).await?;
            Ok(String::new())
        }
        OperatorCommand::Crd => crd::crd_yaml().map_err(Error::Yaml),
    }
}
