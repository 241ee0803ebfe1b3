//! `bulkbench policy get|set`: read or change one recipient's preference in an updatable
//! store, while a server may be serving from it.

use anyhow::{Context, bail};
use bulk_policy::Preference;
use clap::{Args, Subcommand, ValueEnum};

use crate::backend::{BackendKind, BackendSpec, parse_spec};

#[derive(Debug, Args)]
pub struct PolicyArgs {
    #[command(subcommand)]
    command: PolicyCommand,
}

#[derive(Debug, Subcommand)]
enum PolicyCommand {
    /// Print the preference of each ADDRESS (in, out, default, or unknown).
    Get {
        /// The store: lmdb:PATH, or a store server (redis:URL, redis-cluster:URL,...,
        /// postgres:URL); see `serve --help`.
        #[arg(long, value_name = "KIND:PATH|KIND:URL", value_parser = parse_spec)]
        store: BackendSpec,
        /// Addresses, as written in RCPT TO (normalized like lookups).
        #[arg(required = true, num_args = 1..)]
        addresses: Vec<String>,
    },
    /// Set the preference of ADDRESS; a server serving from the store sees it on its next
    /// lookup.
    Set {
        /// The store: lmdb:PATH, or a store server (redis:URL, redis-cluster:URL,...,
        /// postgres:URL); see `serve --help`.
        #[arg(long, value_name = "KIND:PATH|KIND:URL", value_parser = parse_spec)]
        store: BackendSpec,
        /// The address (its domain must be served).
        address: String,
        /// The new preference.
        #[arg(value_enum)]
        preference: PreferenceArg,
    },
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum PreferenceArg {
    /// Accepts bulk mail.
    In,
    /// Refuses bulk mail.
    Out,
    /// No preference: the domain's regime decides.
    Default,
}

/// A store `policy` can read and change: an LMDB environment, or a store server.
enum Updatable {
    Lmdb(bulk_policy_lmdb::LmdbBackend),
    Remote(BackendSpec),
}

fn updatable(store: &BackendSpec) -> anyhow::Result<Updatable> {
    match store.kind {
        BackendKind::Lmdb => bulk_policy_lmdb::LmdbBackend::open(store.path())
            .map(Updatable::Lmdb)
            .with_context(|| format!("cannot open the lmdb store {}", store.location)),
        BackendKind::Redis | BackendKind::RedisCluster | BackendKind::Postgres => {
            Ok(Updatable::Remote(store.clone()))
        }
        BackendKind::Fst => bail!(
            "an fst store is immutable: rebuild it with `bulkbench population --backend fst` \
             and send the server SIGHUP"
        ),
        BackendKind::Memory => bail!(
            "a memory store is a population file: edit it and send the server SIGHUP, or use \
             lmdb"
        ),
    }
}

impl Updatable {
    fn get(&self, address: &str) -> anyhow::Result<Option<Preference>> {
        match self {
            Updatable::Lmdb(backend) => Ok(backend.get(address)?),
            Updatable::Remote(spec) => crate::store::get(spec, address),
        }
    }

    fn set(&self, address: &str, preference: Preference) -> anyhow::Result<()> {
        match self {
            Updatable::Lmdb(backend) => Ok(backend.set(address, preference)?),
            Updatable::Remote(spec) => crate::store::set(spec, address, preference),
        }
    }
}

pub fn run(args: PolicyArgs) -> anyhow::Result<()> {
    match args.command {
        PolicyCommand::Get { store, addresses } => {
            let backend = updatable(&store)?;
            for address in addresses {
                let preference = backend
                    .get(&address)
                    .with_context(|| format!("cannot read {address}"))?;
                let word = preference.map_or("unknown", |p| p.as_str());
                println!("{address}\t{word}");
            }
        }
        PolicyCommand::Set {
            store,
            address,
            preference,
        } => {
            let backend = updatable(&store)?;
            let preference = match preference {
                PreferenceArg::In => Preference::In,
                PreferenceArg::Out => Preference::Out,
                PreferenceArg::Default => Preference::Default,
            };
            backend
                .set(&address, preference)
                .with_context(|| format!("cannot set {address}"))?;
            println!("{address}\t{}", preference.as_str());
        }
    }
    Ok(())
}
