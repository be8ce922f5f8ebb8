//! The tar reader OCI archives and docker-archives share. An archive is read
//! twice: the first pass keeps its small JSON documents in memory (`index.json`,
//! manifests, configs: enough to decide what is needed); the second streams only
//! the entries the chosen images use into the ingest dir. Entry names are
//! normalized and never used as paths.

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io::{self, BufReader, Read, Seek};
use std::ops::ControlFlow;
use std::path::{Component, Path, PathBuf};

use sha2::{Digest as _, Sha256};

use super::super::content::ContentStore;
use super::super::ingest::{ingest, Ingested};
use super::super::unpack::Compression;
use super::super::ImageError;
use super::{not_an_image, MAX_JSON};

/// Most JSON an archive's first pass keeps in memory, all documents together.
const MAX_JSON_TOTAL: u64 = 64 << 20;
/// How many first bytes of a small archive entry tell whether it may be JSON.
const JSON_SNIFF: u64 = 512;

/// A tar (plain, gzip or zstd) read entry by entry, never extracted.
pub(super) struct Archive {
    pub(super) path: PathBuf,
    /// Every regular file, by normalized name.
    files: HashSet<String>,
    /// The small JSON documents among them (at most `MAX_JSON` each), by name.
    json: HashMap<String, Vec<u8>>,
}

impl Archive {
    /// The first pass: which files the archive holds, and its JSON documents.
    pub(super) fn scan(path: &Path) -> Result<Archive, ImageError> {
        let mut files = HashSet::new();
        let mut json = HashMap::new();
        let mut json_total = 0u64;
        for_each_entry(path, &mut |entry| {
            let Some(name) = entry.name.take() else {
                return Ok(ControlFlow::Continue(()));
            };
            if !entry.is_file {
                return Ok(ControlFlow::Continue(()));
            }
            // Tar readers disagree on which of two same-named entries wins; refuse the ambiguity.
            if !files.insert(name.clone()) {
                return Err(ImageError::InvalidContent(format!(
                    "{}: the archive holds {name} twice",
                    path.display()
                )));
            }
            if entry.size > MAX_JSON {
                return Ok(ControlFlow::Continue(()));
            }
            // Layers are never JSON: look at their first bytes only (a plain tar then
            // seeks over the rest).
            let mut raw = Vec::new();
            (&mut *entry.reader)
                .take(JSON_SNIFF)
                .read_to_end(&mut raw)
                .map_err(|e| bad_archive(path, &name, e))?;
            if looks_like_json(&raw) {
                entry
                    .reader
                    .read_to_end(&mut raw)
                    .map_err(|e| bad_archive(path, &name, e))?;
                json_total += raw.len() as u64;
                if json_total > MAX_JSON_TOTAL {
                    return Err(ImageError::InvalidContent(format!(
                        "{}: more than {} MiB of JSON documents",
                        path.display(),
                        MAX_JSON_TOTAL >> 20
                    )));
                }
                json.insert(name, raw);
            }
            Ok(ControlFlow::Continue(()))
        })?;
        Ok(Archive {
            path: path.to_owned(),
            files,
            json,
        })
    }

    pub(super) fn has(&self, name: &str) -> bool {
        self.files.contains(name)
    }

    /// A JSON document the first pass kept.
    pub(super) fn cached(&self, name: &str, what: &str) -> Result<&[u8], ImageError> {
        match self.json.get(name) {
            Some(raw) => Ok(raw),
            None if self.has(name) => Err(ImageError::InvalidContent(format!(
                "{}: {what} ({name}) is not a JSON document of at most {} MiB",
                self.path.display(),
                MAX_JSON >> 20
            ))),
            None => Err(ImageError::InvalidContent(format!(
                "{}: the archive has no {what} ({name})",
                self.path.display()
            ))),
        }
    }

    /// The second pass: streams each entry named in `wanted` into an ingest file
    /// (hashing it when `hash`) and hands it to `store`, which commits it.
    pub(super) fn stream(
        &self,
        content: &ContentStore,
        wanted: &HashSet<String>,
        hash: bool,
        store: &mut dyn FnMut(&str, Ingested) -> Result<(), ImageError>,
    ) -> Result<(), ImageError> {
        if let Some(missing) = wanted.iter().find(|n| !self.has(n)) {
            return Err(ImageError::InvalidContent(format!(
                "{}: the archive has no file {missing}",
                self.path.display()
            )));
        }
        let mut left = wanted.clone();
        if left.is_empty() {
            return Ok(());
        }
        for_each_entry(&self.path, &mut |entry| {
            let Some(name) = entry.name.take() else {
                return Ok(ControlFlow::Continue(()));
            };
            if !entry.is_file || !left.remove(&name) {
                return Ok(ControlFlow::Continue(()));
            }
            let what = format!("{}: {name}", self.path.display());
            let mut hasher = hash.then(Sha256::new);
            let blob = ingest(content, entry.reader, hasher.as_mut(), &what)?;
            let blob = Ingested {
                digest: hasher.map(|h| format!("sha256:{}", hex::encode(h.finalize()))),
                ..blob
            };
            store(&name, blob)?;
            Ok(if left.is_empty() {
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(())
            })
        })?;
        match left.iter().next() {
            // Only if the file changed between the two passes.
            Some(name) => Err(ImageError::InvalidContent(format!(
                "{}: {name} vanished from the archive while it was read",
                self.path.display()
            ))),
            None => Ok(()),
        }
    }
}

/// Whether a document's first bytes (`JSON_SNIFF` of them) may start a JSON object
/// or array; all whitespace so far may too.
fn looks_like_json(head: &[u8]) -> bool {
    matches!(
        head.iter().find(|b| !b.is_ascii_whitespace()),
        Some(b'{' | b'[') | None
    )
}

fn bad_archive(path: &Path, name: &str, e: io::Error) -> ImageError {
    ImageError::InvalidContent(format!("{}: reading {name}: {e}", path.display()))
}

/// One entry as `for_each_entry` hands it out.
struct ArchiveEntry<'a> {
    /// The normalized relative name; None for names that are absolute or climb out
    /// with `..` (never looked up, never written anywhere).
    name: Option<String>,
    is_file: bool,
    size: u64,
    reader: &'a mut dyn Read,
}

type Visit<'v> = dyn FnMut(&mut ArchiveEntry<'_>) -> Result<ControlFlow<()>, ImageError> + 'v;

/// Calls `visit` for each entry of the tar at `path`, decompressing a gzip or zstd
/// tar on the fly, until it breaks.
fn for_each_entry(path: &Path, visit: &mut Visit<'_>) -> Result<(), ImageError> {
    let io_err = |e| ImageError::io(format!("read {}", path.display()), e);
    let mut file = File::open(path).map_err(io_err)?;
    let mut head = [0u8; 4];
    let mut n = 0;
    while n < head.len() {
        match file.read(&mut head[n..]).map_err(io_err)? {
            0 => break,
            got => n += got,
        }
    }
    file.rewind().map_err(io_err)?;
    match Compression::sniff(&head[..n]) {
        Compression::None => {
            visit_entries(path, tar::Archive::new(file).entries_with_seek(), visit)
        }
        Compression::Gzip => {
            let gz = flate2::read::MultiGzDecoder::new(BufReader::new(file));
            visit_entries(path, tar::Archive::new(gz).entries(), visit)
        }
        Compression::Zstd => {
            let zst = zstd::Decoder::new(file).map_err(io_err)?;
            visit_entries(path, tar::Archive::new(zst).entries(), visit)
        }
    }
}

fn visit_entries<R: Read>(
    path: &Path,
    entries: io::Result<tar::Entries<'_, R>>,
    visit: &mut Visit<'_>,
) -> Result<(), ImageError> {
    let mut seen_any = false;
    // Tar errors quote the bytes they choked on: escape them for the message.
    let bad = |seen_any: bool, e: io::Error| match seen_any {
        false => not_an_image(path, "not a tar archive"),
        true => ImageError::InvalidContent(format!(
            "{}: reading the tar: {}",
            path.display(),
            e.to_string().escape_debug()
        )),
    };
    for entry in entries.map_err(|e| bad(seen_any, e))? {
        let mut entry = entry.map_err(|e| bad(seen_any, e))?;
        seen_any = true;
        let raw_name = entry.path().map_err(|e| bad(true, e))?.into_owned();
        let name = entry_name(&raw_name);
        if name.is_none() && !entry.header().entry_type().is_dir() {
            tracing::warn!(archive = %path.display(), entry = %raw_name.display(), "archive entry with an absolute or `..` name ignored");
        }
        let is_file = matches!(
            entry.header().entry_type(),
            tar::EntryType::Regular | tar::EntryType::Continuous
        );
        let size = entry.size();
        let mut visited = ArchiveEntry {
            name,
            is_file,
            size,
            reader: &mut entry,
        };
        if visit(&mut visited)?.is_break() {
            break;
        }
    }
    Ok(())
}

/// A tar entry name (or a name `manifest.json` lists) as a relative path inside the
/// archive: `./a//b` is `a/b`; absolute names and any `..` are refused.
pub(super) fn entry_name(raw: &Path) -> Option<String> {
    let mut parts = Vec::new();
    for c in raw.components() {
        match c {
            Component::Normal(part) => parts.push(part.to_str()?),
            Component::CurDir => {}
            Component::ParentDir | Component::RootDir | Component::Prefix(_) => return None,
        }
    }
    (!parts.is_empty()).then(|| parts.join("/"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entry_names_stay_inside() {
        assert_eq!(
            entry_name(Path::new("./blobs//sha256/ab")).as_deref(),
            Some("blobs/sha256/ab")
        );
        assert_eq!(
            entry_name(Path::new("manifest.json")).as_deref(),
            Some("manifest.json")
        );
        for bad in ["../evil", "/abs", "a/../../b", "a/..", ".", "./"] {
            assert_eq!(entry_name(Path::new(bad)), None, "{bad}");
        }
    }
}
