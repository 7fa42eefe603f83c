//! `flotilla snapshot save|status|restore`: backups, as `etcdctl snapshot save` and
//! `etcdutl snapshot status|restore` make and use them. The format is in `server::backup`.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Subcommand;
use server::backup::{self, BackupStatus, RestoreOptions};
use server::proto::etcdserverpb::maintenance_client::MaintenanceClient;
use server::proto::etcdserverpb::SnapshotRequest;

use crate::client::{self, ClientOptions};

/// `flotilla snapshot ...`.
#[derive(Debug, Subcommand)]
pub enum SnapshotCommand {
    /// Save a backup of one member's state (give exactly one endpoint) to FILE.
    Save {
        /// Where to write it; written beside as FILE.part and renamed when complete.
        file: PathBuf,
    },
    /// Check a backup and print its hash, revision, total keys and size.
    Status {
        /// The backup.
        file: PathBuf,
        /// `table` or `json`.
        #[arg(long, short = 'w', default_value = "table")]
        write_out: String,
    },
    /// Build a new member's data directory from a backup, for a cluster rebuilt from it.
    /// Restore every member of the new cluster from the same file with the same
    /// --initial-cluster and --initial-cluster-token, then start them with `serve`.
    Restore {
        /// The backup.
        file: PathBuf,
        /// The new member's data directory [default: <name>.flotilla]; must not exist.
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// The new member's name.
        #[arg(long, default_value = "default")]
        name: String,
        /// The new cluster: name=peer-url pairs, comma separated.
        #[arg(long, default_value = "default=http://localhost:2380")]
        initial_cluster: String,
        /// The new cluster's token.
        #[arg(long, default_value = "etcd-cluster")]
        initial_cluster_token: String,
        /// This member's peer URLs (comma separated), as in --initial-cluster.
        #[arg(long, default_value = "http://localhost:2380", value_delimiter = ',')]
        initial_advertise_peer_urls: Vec<String>,
    },
}

/// Runs a snapshot command.
pub async fn run(command: SnapshotCommand, options: ClientOptions) -> ExitCode {
    let result = match command {
        SnapshotCommand::Save { file } => save(&file, &options).await,
        SnapshotCommand::Status { file, write_out } => {
            let json = options.json || write_out == "json";
            if !json && write_out != "table" {
                Err(format!("--write-out {write_out:?}: use table or json"))
            } else {
                read(&file)
                    .and_then(|bytes| backup::status(&bytes).map_err(|error| error.to_string()))
                    .map(|status| print_status(&status, json))
            }
        }
        SnapshotCommand::Restore {
            file,
            data_dir,
            name,
            initial_cluster,
            initial_cluster_token,
            initial_advertise_peer_urls,
        } => {
            let options = RestoreOptions {
                data_dir: data_dir.unwrap_or_else(|| PathBuf::from(format!("{name}.flotilla"))),
                name,
                initial_cluster,
                initial_cluster_token,
                initial_advertise_peer_urls,
            };
            read(&file).and_then(|bytes| {
                let identity =
                    backup::restore(&bytes, &options).map_err(|error| error.to_string())?;
                println!(
                    "restored {} into {} as member {:x} of cluster {:x}",
                    file.display(),
                    options.data_dir.display(),
                    identity.member_id,
                    identity.cluster_id
                );
                Ok(())
            })
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("Error: {error}");
            ExitCode::FAILURE
        }
    }
}

fn read(file: &Path) -> Result<Vec<u8>, String> {
    std::fs::read(file).map_err(|error| format!("reading {}: {error}", file.display()))
}

/// Streams a backup from the one endpoint into `file.part`, checks it, syncs it and renames it
/// to `file`; a failed or damaged transfer leaves no `file`.
async fn save(file: &Path, options: &ClientOptions) -> Result<(), String> {
    if options.endpoints.len() != 1 {
        return Err(format!(
            "snapshot must be requested from one member, not {} (give one --endpoints)",
            options.endpoints.len()
        ));
    }
    let channel = client::connect(options).await?;
    let mut stream = MaintenanceClient::new(channel)
        .max_decoding_message_size(usize::MAX)
        .snapshot(SnapshotRequest {})
        .await
        .map_err(|status| status.message().to_string())?
        .into_inner();
    let mut partial_name = file.as_os_str().to_owned();
    partial_name.push(".part");
    let partial = PathBuf::from(partial_name);
    let written = async {
        let mut bytes = Vec::new();
        while let Some(message) = stream
            .message()
            .await
            .map_err(|status| status.message().to_string())?
        {
            bytes.extend_from_slice(&message.blob);
        }
        backup::open_backup(&bytes).map_err(|error| error.to_string())?;
        let mut output = std::fs::File::create(&partial)
            .map_err(|error| format!("creating {}: {error}", partial.display()))?;
        output
            .write_all(&bytes)
            .and_then(|()| output.sync_all())
            .map_err(|error| format!("writing {}: {error}", partial.display()))?;
        std::fs::rename(&partial, file)
            .map_err(|error| format!("renaming to {}: {error}", file.display()))?;
        Ok::<u64, String>(bytes.len() as u64)
    }
    .await;
    match written {
        Ok(size_bytes) => {
            println!(
                "Snapshot saved at {} ({})",
                file.display(),
                human_bytes(size_bytes)
            );
            Ok(())
        }
        Err(error) => {
            let _ = std::fs::remove_file(&partial);
            Err(error)
        }
    }
}

fn print_status(status: &BackupStatus, json: bool) {
    if json {
        println!(
            "{{\"hash\":{},\"revision\":{},\"totalKey\":{},\"totalSize\":{}}}",
            status.hash, status.revision, status.total_keys, status.total_size_bytes
        );
        return;
    }
    let cells = [
        format!("{:08x}", status.hash),
        status.revision.to_string(),
        status.total_keys.to_string(),
        human_bytes(status.total_size_bytes),
    ];
    let titles = ["HASH", "REVISION", "TOTAL KEYS", "TOTAL SIZE"];
    let widths: Vec<usize> = titles
        .iter()
        .zip(&cells)
        .map(|(title, cell)| title.len().max(cell.len()) + 2)
        .collect();
    let rule: String = widths
        .iter()
        .map(|width| format!("+{}", "-".repeat(*width)))
        .collect::<String>()
        + "+";
    let row = |values: Vec<String>, centred: bool| {
        values
            .iter()
            .zip(&widths)
            .map(|(value, width)| {
                if centred {
                    format!("|{value:^width$}")
                } else {
                    format!("|{value:>w$} ", w = width - 1)
                }
            })
            .collect::<String>()
            + "|"
    };
    println!("{rule}");
    println!(
        "{}",
        row(titles.iter().map(|title| title.to_string()).collect(), true)
    );
    println!("{rule}");
    println!("{}", row(cells.to_vec(), false));
    println!("{rule}");
}

/// Sizes in SI units as etcd's tools print them: "512 B", "20 kB", "2.1 MB".
fn human_bytes(bytes: u64) -> String {
    if bytes < 10 {
        return format!("{bytes} B");
    }
    let units = ["B", "kB", "MB", "GB", "TB", "PB", "EB"];
    let exponent = ((bytes as f64).log10() / 3.0).floor() as usize;
    let exponent = exponent.min(units.len() - 1);
    let value = bytes as f64 / 1000f64.powi(exponent as i32);
    if value < 10.0 {
        format!("{value:.1} {}", units[exponent])
    } else {
        format!("{value:.0} {}", units[exponent])
    }
}

#[cfg(test)]
mod tests {
    use super::human_bytes;

    #[test]
    fn sizes_print_as_etcds_tools_print_them() {
        assert_eq!(human_bytes(5), "5 B");
        assert_eq!(human_bytes(512), "512 B");
        assert_eq!(human_bytes(20_480), "20 kB");
        assert_eq!(human_bytes(2_100_000), "2.1 MB");
    }
}
