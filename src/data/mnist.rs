//! The four MNIST files, the local cache that holds them, and the decoded splits.

use std::fs::File;
use std::path::{Path, PathBuf};

use super::fetch::Fetcher;
use super::idx::{self, Decoded, Kind, PIXELS};
use crate::error::{Error, IdxFault, Result};

/// One of the four published files, with the SHA-256 of its decompressed content.
#[derive(Debug, Clone, Copy)]
pub struct MnistFile {
    pub name: &'static str,
    pub kind: Kind,
    pub sha256: &'static str,
}

impl MnistFile {
    pub fn gz_name(&self) -> String {
        format!("{}.gz", self.name)
    }
}

pub const TRAIN_IMAGES: MnistFile = MnistFile {
    name: "train-images-idx3-ubyte",
    kind: Kind::Images,
    sha256: "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
};
pub const TRAIN_LABELS: MnistFile = MnistFile {
    name: "train-labels-idx1-ubyte",
    kind: Kind::Labels,
    sha256: "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
};
pub const TEST_IMAGES: MnistFile = MnistFile {
    name: "t10k-images-idx3-ubyte",
    kind: Kind::Images,
    sha256: "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
};
pub const TEST_LABELS: MnistFile = MnistFile {
    name: "t10k-labels-idx1-ubyte",
    kind: Kind::Labels,
    sha256: "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
};

/// The four files, training then test, images then labels.
pub const FILES: [MnistFile; 4] = [TRAIN_IMAGES, TRAIN_LABELS, TEST_IMAGES, TEST_LABELS];

/// What a data directory holds for one of the [`FILES`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FileStatus {
    /// The canonical MNIST file, with this many items.
    Canonical(usize),
    /// A valid IDX file of the right kind that is not MNIST's (Fashion-MNIST, a subset).
    OtherIdx(usize),
    /// Present but unreadable.
    Corrupt(String),
    Missing,
}

impl FileStatus {
    /// Whether training can use the file.
    pub fn is_usable(&self) -> bool {
        matches!(self, FileStatus::Canonical(_) | FileStatus::OtherIdx(_))
    }

    fn of(decoded: &Decoded, file: &MnistFile) -> FileStatus {
        if decoded.sha256 == file.sha256 {
            FileStatus::Canonical(decoded.count)
        } else {
            FileStatus::OtherIdx(decoded.count)
        }
    }

    /// `canonical MNIST, 60000 images`, `missing`, ….
    pub fn describe(&self, kind: Kind) -> String {
        let items = |n: &usize| match kind {
            Kind::Images => format!("{n} images"),
            Kind::Labels => format!("{n} labels"),
        };
        match self {
            FileStatus::Canonical(n) => format!("canonical MNIST, {}", items(n)),
            FileStatus::OtherIdx(n) => {
                format!("a valid IDX file but not MNIST's own, {}", items(n))
            }
            FileStatus::Corrupt(fault) => format!("corrupt: {fault}"),
            FileStatus::Missing => "missing".into(),
        }
    }
}

/// Images (28x28 grey bytes, row-major, one after another) and their labels.
#[derive(Debug, Clone, Default)]
pub struct Split {
    pub images: Vec<u8>,
    pub labels: Vec<u8>,
}

impl Split {
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    pub fn image(&self, index: usize) -> &[u8] {
        &self.images[index * PIXELS..(index + 1) * PIXELS]
    }
}

/// Which half of MNIST.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    Train,
    Test,
}

impl Part {
    fn files(self) -> (MnistFile, MnistFile) {
        match self {
            Part::Train => (TRAIN_IMAGES, TRAIN_LABELS),
            Part::Test => (TEST_IMAGES, TEST_LABELS),
        }
    }
}

/// Where the files live and how to get the missing ones.
#[derive(Debug, Clone)]
pub struct DataSource {
    pub dir: PathBuf,
    pub fetcher: Fetcher,
}

impl DataSource {
    /// The small real subset of MNIST committed under `data/`, with no mirror: what unit
    /// tests train and evaluate on.
    #[cfg(test)]
    pub(crate) fn committed_subset() -> DataSource {
        DataSource {
            dir: concat!(env!("CARGO_MANIFEST_DIR"), "/data/mnist-subset").into(),
            fetcher: Fetcher {
                mirrors: Vec::new(),
                ..Fetcher::default()
            },
        }
    }

    /// Loads one half of MNIST, downloading what is missing; `limit` keeps the first N items.
    pub fn load(&self, part: Part, limit: Option<usize>) -> Result<Split> {
        let (image_file, label_file) = part.files();
        let (images, images_path) = self.obtain(&image_file)?;
        let (labels, _) = self.obtain(&label_file)?;
        if images.count != labels.count {
            return Err(Error::Idx {
                path: images_path,
                fault: IdxFault::CountMismatch {
                    images: images.count,
                    labels: labels.count,
                },
            });
        }
        let keep = limit.map_or(images.count, |n| n.min(images.count));
        let mut split = Split {
            images: images.data,
            labels: labels.data,
        };
        split.images.truncate(keep * PIXELS);
        split.labels.truncate(keep);
        Ok(split)
    }

    /// The decoded file and where it came from: the cache when present, else a mirror.
    fn obtain(&self, file: &MnistFile) -> Result<(Decoded, PathBuf)> {
        if let Some(path) = self.cached(file) {
            let decoded = read_file(&path, file.kind)?;
            if decoded.sha256 != file.sha256 {
                // A user's own IDX set (Fashion-MNIST has this layout) is theirs to use.
                crate::notes::note(format_args!(
                    "{} is not the canonical MNIST file (its SHA-256 differs); using it as it is",
                    path.display()
                ));
            }
            return Ok((decoded, path));
        }
        let decoded = self.fetcher.fetch(file, &self.dir)?;
        Ok((decoded, self.dir.join(file.gz_name())))
    }

    /// Where `file` is in the data directory, if it is: gzipped or plain.
    fn cached(&self, file: &MnistFile) -> Option<PathBuf> {
        [self.dir.join(file.gz_name()), self.dir.join(file.name)]
            .into_iter()
            .find(|path| path.is_file())
    }

    /// What the data directory holds for each of the [`FILES`], without any network.
    pub fn check(&self) -> Vec<(PathBuf, FileStatus)> {
        FILES
            .iter()
            .map(|file| match self.cached(file) {
                Some(path) => {
                    let status = match read_file(&path, file.kind) {
                        Ok(decoded) => FileStatus::of(&decoded, file),
                        Err(Error::Idx { fault, .. }) => FileStatus::Corrupt(fault.to_string()),
                        Err(other) => FileStatus::Corrupt(other.to_string()),
                    };
                    (path, status)
                }
                None => (self.dir.join(file.gz_name()), FileStatus::Missing),
            })
            .collect()
    }

    /// Fetches each of the [`FILES`] that is missing (verified, as always); each file's path,
    /// status, and whether it was fetched now. Stops at the first file no mirror gives.
    pub fn fill(&self) -> Result<Vec<(PathBuf, FileStatus, bool)>> {
        let mut report = Vec::new();
        for ((path, status), file) in self.check().into_iter().zip(&FILES) {
            report.push(match status {
                FileStatus::Missing => {
                    let decoded = self.fetcher.fetch(file, &self.dir)?;
                    (path, FileStatus::of(&decoded, file), true)
                }
                other => (path, other, false),
            });
        }
        Ok(report)
    }
}

/// Decodes one IDX file from disk, naming the file in any error.
pub fn read_file(path: &Path, kind: Kind) -> Result<Decoded> {
    let file = File::open(path).map_err(|e| Error::io("cannot open", path, e))?;
    idx::decode(kind, file).map_err(|fault| Error::Idx {
        path: path.to_path_buf(),
        fault,
    })
}
