//! Whole-tree walks from the root through directories: what `teemsfs gc` and
//! `teemsfs fsck` build on (DESIGN §9, §10).
//!
//! TEEMS offers no listing of keys, so the set of live metadata is found the way a reader
//! finds it: from the share's root, through every directory's buckets, to every inode.
//! The walk collects every blob the live metadata names — file contents, manifests and the
//! chunks they list, directory buckets, xattr blobs — together with each directory's
//! metadata version, and checks on the way that the pieces agree: an entry's inode exists
//! and has the entry's kind, a directory's parent pointer, link count and entry count
//! match its entries, a file's link count matches the names found for it, a file's size
//! matches its blob or manifest. With `verify_contents`, every content blob is also
//! fetched and verified (hashes, decryption) through the blob layer.
//!
//! Not here: which objects are in the stores, and whether all fragments of a blob are
//! present — that needs the store layer (`teemsfs::housekeeping`).

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};

use futures::stream::{self, StreamExt};

use super::format::{Data, Inode, Kind, bucket_key};
use super::{BlobRef, Fs, FsError, FsResult};
use crate::meta::{Key, Version};

/// Metadata reads (or blob fetches) in flight at once during a walk.
const WALK_PARALLEL: usize = 16;
/// Deepest directory nesting walked; deeper means a corrupt (cyclic) tree.
const MAX_DEPTH: usize = 4096;

/// What to check besides the structure.
#[derive(Clone, Copy, Debug, Default)]
pub struct WalkOptions {
    /// Fetch and verify every file's content blobs (fsck); otherwise only manifests and
    /// directory buckets are read (gc).
    pub verify_contents: bool,
}

/// Counters reported while walking.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WalkProgress {
    pub dirs: u64,
    pub files: u64,
    pub other: u64,
    pub blobs: u64,
    pub bytes_verified: u64,
}

/// One inconsistency the walk found, with the path it was found at.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    pub path: String,
    pub what: String,
}

/// Everything a walk found.
#[derive(Debug, Default)]
pub struct TreeWalk {
    /// Every directory reached and its metadata version when read. Two walks with equal
    /// maps saw the same tree (versions only grow).
    pub dir_versions: BTreeMap<Key, Version>,
    /// Every blob live metadata names.
    pub blobs: Vec<BlobRef>,
    pub problems: Vec<Problem>,
    pub progress: WalkProgress,
}

struct Found {
    path: String,
    inode: Inode,
    names: u32,
}

impl Fs {
    /// Walks the whole tree from the root; `on_progress` is called after each directory.
    pub async fn walk_tree(
        &self,
        options: WalkOptions,
        on_progress: &(dyn Fn(&WalkProgress) + Sync),
    ) -> FsResult<TreeWalk> {
        let mut out = TreeWalk::default();
        // Non-directories by key: hard links make one inode reachable under many names.
        let mut others: HashMap<Key, Found> = HashMap::new();
        let mut seen_dirs: HashSet<Key> = HashSet::new();
        let mut queue: VecDeque<(Key, String, usize)> = VecDeque::new();
        queue.push_back((self.root, "/".to_string(), 0));
        seen_dirs.insert(self.root);
        while let Some((dir_key, path, depth)) = queue.pop_front() {
            let (dir, version) = match self.read_inode(dir_key).await {
                Ok(read) => read,
                Err(FsError::NotFound) if dir_key != self.root => {
                    // Removed since its parent was listed (a concurrent rmdir).
                    continue;
                }
                Err(e) => return Err(e),
            };
            out.dir_versions.insert(dir_key, version);
            out.progress.dirs += 1;
            if dir.kind != Kind::Dir {
                out.problems.push(Problem {
                    path: path.clone(),
                    what: format!("entry says directory, inode is {:?}", dir.kind),
                });
                continue;
            }
            out.blobs.extend(Self::direct_blobs(&dir));
            if let Data::Dir { bucket_bits, .. } = dir.data
                && bucket_bits > 0
            {
                for i in 0..(1u64 << bucket_bits) {
                    if let Ok((bytes, _)) =
                        self.teems.read(self.share, bucket_key(&dir_key, i)).await
                        && let Ok(meta) = super::format::decode::<super::format::BucketMeta>(
                            "bucket metadata",
                            &bytes,
                        )
                        && let super::format::BucketData::Blob(b) = meta.data
                    {
                        out.blobs.push(b);
                    }
                }
            }
            let entries = match self.load_all_entries(dir_key, &dir).await {
                Ok(e) => e,
                Err(e) => {
                    out.problems.push(Problem {
                        path: path.clone(),
                        what: format!("directory entries unreadable: {e}"),
                    });
                    continue;
                }
            };
            let subdirs = entries.values().filter(|e| e.kind == Kind::Dir).count() as u32;
            if dir.nlink != 2 + subdirs {
                out.problems.push(Problem {
                    path: path.clone(),
                    what: format!(
                        "link count {} but {} subdirectories (expected {})",
                        dir.nlink,
                        subdirs,
                        2 + subdirs
                    ),
                });
            }
            if dir.size != entries.len() as u64 {
                out.problems.push(Problem {
                    path: path.clone(),
                    what: format!("size {} but {} entries", dir.size, entries.len()),
                });
            }
            let reads: Vec<_> = stream::iter(entries)
                .map(|(name, entry)| async move { (name, entry, self.read_inode(entry.key).await) })
                .buffered(WALK_PARALLEL)
                .collect()
                .await;
            for (name, entry, read) in reads {
                let child_path = format!(
                    "{}{}{}",
                    path,
                    if path.ends_with('/') { "" } else { "/" },
                    String::from_utf8_lossy(&name)
                );
                let inode = match read {
                    Ok((inode, _)) => inode,
                    Err(FsError::NotFound) => {
                        out.problems.push(Problem {
                            path: child_path,
                            what: "entry names a missing inode".into(),
                        });
                        continue;
                    }
                    Err(e) => return Err(e),
                };
                if inode.kind != entry.kind {
                    out.problems.push(Problem {
                        path: child_path.clone(),
                        what: format!(
                            "entry kind {:?} but inode kind {:?}",
                            entry.kind, inode.kind
                        ),
                    });
                }
                if inode.kind == Kind::Dir {
                    if inode.parent != Some(dir_key) {
                        out.problems.push(Problem {
                            path: child_path.clone(),
                            what: "parent pointer does not name the containing directory".into(),
                        });
                    }
                    if depth + 1 >= MAX_DEPTH {
                        out.problems.push(Problem {
                            path: child_path,
                            what: "directory nesting deeper than the walk limit".into(),
                        });
                    } else if seen_dirs.insert(entry.key) {
                        queue.push_back((entry.key, child_path, depth + 1));
                    } else {
                        out.problems.push(Problem {
                            path: child_path,
                            what: "directory reachable under two names".into(),
                        });
                    }
                    continue;
                }
                match others.get_mut(&entry.key) {
                    Some(found) => found.names += 1,
                    None => {
                        others.insert(
                            entry.key,
                            Found {
                                path: child_path,
                                inode,
                                names: 1,
                            },
                        );
                    }
                }
            }
            on_progress(&out.progress);
        }
        // Non-directories: link counts, then their content blobs.
        let mut items: Vec<(Key, Found)> = others.into_iter().collect();
        items.sort_by(|a, b| a.1.path.cmp(&b.1.path));
        for (_, found) in &items {
            if found.inode.nlink != found.names {
                out.problems.push(Problem {
                    path: found.path.clone(),
                    what: format!("link count {} but {} names", found.inode.nlink, found.names),
                });
            }
            if found.inode.kind == Kind::File {
                out.progress.files += 1;
            } else {
                out.progress.other += 1;
            }
        }
        let checked: Vec<(Vec<BlobRef>, Vec<Problem>, u64)> = stream::iter(items.iter())
            .map(|(_, found)| self.file_blobs(found, options))
            .buffered(WALK_PARALLEL)
            .collect()
            .await;
        for (blobs, problems, bytes) in checked {
            out.progress.blobs += blobs.len() as u64;
            out.progress.bytes_verified += bytes;
            out.blobs.extend(blobs);
            out.problems.extend(problems);
        }
        on_progress(&out.progress);
        Ok(out)
    }

    /// A non-directory's blobs, checked against its size; with `verify_contents`, fetched.
    async fn file_blobs(
        &self,
        found: &Found,
        options: WalkOptions,
    ) -> (Vec<BlobRef>, Vec<Problem>, u64) {
        let mut blobs = Self::direct_blobs(&found.inode);
        let mut problems = Vec::new();
        let mut bytes = 0u64;
        let problem = |what: String| Problem {
            path: found.path.clone(),
            what,
        };
        let size = found.inode.size;
        let mut contents: Vec<(u64, BlobRef)> = Vec::new();
        match &found.inode.data {
            Data::Empty if found.inode.kind == Kind::File && size != 0 => {
                problems.push(problem(format!("size {size} but no content")));
            }
            Data::Inline(bytes) if bytes.len() as u64 != size => {
                problems.push(problem(format!(
                    "size {size} but inline content holds {}",
                    bytes.len()
                )));
            }
            Data::Single(b) => {
                if b.len != size {
                    problems.push(problem(format!(
                        "size {size} but content blob holds {}",
                        b.len
                    )));
                }
                contents.push((size, b.clone()));
            }
            Data::Chunked { manifest } => match self.load_manifest(manifest).await {
                Ok(m) => {
                    let n = size.div_ceil(m.chunk_size);
                    if m.chunks.len() as u64 != n {
                        problems.push(problem(format!(
                            "size {size} needs {n} chunks of {}, manifest lists {}",
                            m.chunk_size,
                            m.chunks.len()
                        )));
                    }
                    for (i, c) in m.chunks.iter().enumerate() {
                        if let Some(c) = c {
                            let want = size
                                .saturating_sub(i as u64 * m.chunk_size)
                                .min(m.chunk_size);
                            if c.len != want {
                                problems.push(problem(format!(
                                    "chunk {i} holds {} bytes, expected {want}",
                                    c.len
                                )));
                            }
                            contents.push((want, c.clone()));
                            blobs.push(c.clone());
                        }
                    }
                }
                Err(e) => problems.push(problem(format!("manifest unreadable: {e}"))),
            },
            _ => {}
        }
        if let Some(x) = &found.inode.xattrs
            && options.verify_contents
            && let Err(e) = self.blobs.get(x).await
        {
            problems.push(problem(format!("xattr blob unreadable: {e}")));
        }
        if options.verify_contents {
            for (_, b) in &contents {
                match self.blobs.get(b).await {
                    Ok(plain) if plain.len() as u64 == b.len => bytes += b.len,
                    Ok(plain) => problems.push(problem(format!(
                        "blob holds {} bytes, metadata says {}",
                        plain.len(),
                        b.len
                    ))),
                    Err(e) => problems.push(problem(format!("content unreadable: {e}"))),
                }
            }
        }
        (blobs, problems, bytes)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::fs::{Caller, FsConfig, MemBlobs};
    use crate::meta::{MemTeems, ShareId};

    #[tokio::test]
    async fn a_walk_finds_every_live_blob_and_flags_a_wrong_link_count() {
        let teems = MemTeems::new();
        let blobs = Arc::new(MemBlobs::new());
        let config = FsConfig {
            chunk_size_bytes: 64,
            dir_bucket_max_entries: 4,
            ..FsConfig::default()
        };
        let fs = Fs::new(
            Arc::new(teems.clone()),
            blobs.clone(),
            ShareId([1; 16]),
            Key([2; 16]),
            config,
        );
        let me = Caller::default();
        fs.init(me).await.expect("init");
        let root = fs.root();
        let d = fs.mkdir(root, b"d", 0o755, me).await.expect("mkdir").key;
        for i in 0..10 {
            let (a, o) = fs
                .create(d, format!("f{i}").as_bytes(), 0o644, me)
                .await
                .expect("create");
            fs.write(o.fh, 0, &vec![i as u8; 100 + i * 20])
                .await
                .expect("write");
            fs.release(o.fh).await.expect("close");
            if i == 0 {
                fs.link(a.key, root, b"hard").await.expect("link");
                fs.setxattr(a.key, b"user.x", b"v", 0).await.expect("xattr");
            }
        }
        fs.symlink(root, b"s", b"d/f1", me).await.expect("symlink");
        fs.drain_retired().await;
        let walk = fs
            .walk_tree(
                WalkOptions {
                    verify_contents: true,
                },
                &|_| {},
            )
            .await
            .expect("walk");
        assert!(walk.problems.is_empty(), "{:?}", walk.problems);
        assert_eq!(walk.progress.dirs, 2);
        assert_eq!(walk.progress.files, 10);
        assert_eq!(walk.progress.other, 1);
        // With every superseded blob deleted, the live blobs are exactly the stored ones.
        let live: HashSet<&BlobRef> = walk.blobs.iter().collect();
        assert_eq!(
            live.len(),
            blobs.len(),
            "every stored blob is named, and only those"
        );
        // Break a link count behind the filesystem's back: the walk reports it.
        let f3 = fs.lookup(d, b"f3").await.expect("lookup").key;
        let (mut inode, _) = fs.read_inode(f3).await.expect("read");
        inode.nlink = 2;
        fs.write_inode(f3, &inode).await.expect("write");
        let walk = fs
            .walk_tree(WalkOptions::default(), &|_| {})
            .await
            .expect("walk");
        assert_eq!(walk.problems.len(), 1, "{:?}", walk.problems);
        assert!(
            walk.problems[0].path.ends_with("/d/f3")
                && walk.problems[0].what.contains("link count 2")
        );
    }
}
