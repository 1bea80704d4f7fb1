//! Static files: maps a request path under `PUBLIC_MOUNT` to a file inside `PUBLIC_PATH` and answers with it.
//!
//! This module owns traversal safety and the headers of a file response (`Content-Type`, `Content-Length`,
//! `Cache-Control`). It must not know about JSON routes, methods other than GET/HEAD, or sockets; the bodies
//! of error answers belong to `routes.rs`, so a refusal is returned as a bare [`StatusCode`].
//!
//! Two independent fences keep every read inside the public directory:
//! 1. Lexical: the path after the mount is split on `/` and each segment is percent-decoded exactly once.
//!    A segment that decodes to `..` or `.`, or contains `/`, `\` or NUL, is refused, and so is an empty
//!    segment anywhere but at the end (`//etc/passwd`). Decoding once and checking afterwards is what stops
//!    `%2e%2e` and `%2f`; decoding twice would let `%252e` through.
//! 2. Filesystem: the candidate is canonicalized (resolving every symlink) and must still start with the
//!    canonicalized root, so a symlink inside public that leads outside it is refused like `..`.
//!
//! Every refusal is a 404 (400 for a path that is not UTF-8 once decoded), never a different error, so a
//! client cannot probe what exists outside the root. The SPA fallback only covers paths that are merely
//! missing, never refused ones.
//!
//! Reads go through glommio's [`BufferedFile`] (io_uring on the page cache), so a cold read does not stall
//! the shard's other connections. Resolving the path (`canonicalize`, `metadata`) still uses blocking
//! `std::fs` calls: they touch only metadata, and glommio offers no async `realpath`. A file is read whole
//! into memory, so anything larger than [`MAX_FILE_BYTES`] is refused with a 500 and a warning instead of
//! being buffered; a HEAD request never reads the file at all.

use std::path::{Path, PathBuf};

use bytes::Bytes;
use glommio::io::BufferedFile;
use http_body_util::Full;
use hyper::header::{HeaderValue, CACHE_CONTROL, CONTENT_LENGTH, CONTENT_TYPE};
use hyper::{Response, StatusCode};
use percent_encoding::percent_decode_str;
use tracing::{debug, warn};

use crate::config::PublicSettings;

/// The largest file served; the public directory holds a chat page and its assets, so anything bigger is
/// an operator mistake rather than something to stream.
pub(super) const MAX_FILE_BYTES: u64 = 16 << 20;

/// The public directory as one HTTP shard serves it.
#[derive(Debug)]
pub(super) struct StaticFiles {
    /// The canonicalized `PUBLIC_PATH`; `None` when it does not exist, and then every file is missing.
    root: Option<PathBuf>,
    /// `PUBLIC_MOUNT` without its trailing slashes, so `/` becomes the empty string.
    mount: String,
    /// `PUBLIC_INDEX`.
    index: String,
    /// `PUBLIC_CACHE_CONTROL`, validated once; `None` if it is not a legal header value.
    cache_control: Option<HeaderValue>,
    /// `PUBLIC_SPA_FALLBACK`.
    spa_fallback: bool,
}

/// What a request path names before the filesystem is consulted.
#[derive(Debug, PartialEq, Eq)]
enum Target {
    /// The path is not under the mount.
    Unmounted,
    /// A segment does not decode to UTF-8.
    Undecodable,
    /// A segment could leave the root (`..`, `.`, `/`, `\`, NUL, or an empty segment in the middle).
    Forbidden,
    /// A path relative to the root made only of plain names (empty for the mount root).
    Inside(PathBuf),
}

/// What the filesystem says about a [`Target::Inside`] path.
#[derive(Debug, PartialEq, Eq)]
enum Located {
    /// A regular file inside the root (for a directory: its index file).
    File(PathBuf),
    /// Nothing there, or not a regular file.
    Missing,
    /// It exists, but resolving symlinks leads outside the root.
    Escaped,
}

impl StaticFiles {
    /// Canonicalizes the root once, so each request compares against a fixed prefix.
    pub(super) fn new(public: &PublicSettings) -> StaticFiles {
        let root = match public.path.canonicalize() {
            Ok(root) => Some(root),
            Err(e) => {
                warn!(path = %public.path.display(), error = %e, "public directory unavailable; static files will 404");
                None
            }
        };
        let cache_control = HeaderValue::from_str(&public.cache_control)
            .map_err(|_| warn!(value = %public.cache_control, "PUBLIC_CACHE_CONTROL is not a valid header value; not sent"))
            .ok();
        StaticFiles {
            root,
            mount: public.mount.trim_end_matches('/').to_owned(),
            index: public.index.clone(),
            cache_control,
            spa_fallback: public.spa_fallback,
        }
    }

    /// Answers a GET (or, with `head_only`, a HEAD) for the raw, still percent-encoded URL `path`.
    pub(super) async fn respond(
        &self,
        path: &str,
        head_only: bool,
    ) -> Result<Response<Full<Bytes>>, StatusCode> {
        let relative = match target(&self.mount, path) {
            Target::Inside(relative) => relative,
            Target::Unmounted => return Err(StatusCode::NOT_FOUND),
            Target::Undecodable => return Err(StatusCode::BAD_REQUEST),
            Target::Forbidden => {
                debug!(path, "refused a path that could leave the public directory");
                return Err(StatusCode::NOT_FOUND);
            }
        };
        let file = match self.locate(&relative) {
            Located::File(file) => file,
            Located::Escaped => {
                debug!(
                    path,
                    "refused a symlink leading outside the public directory"
                );
                return Err(StatusCode::NOT_FOUND);
            }
            Located::Missing if self.spa_fallback => match self.locate(Path::new("")) {
                Located::File(index) => index,
                _ => return Err(StatusCode::NOT_FOUND),
            },
            Located::Missing => return Err(StatusCode::NOT_FOUND),
        };
        self.file_response(&file, head_only).await
    }

    /// Resolves `relative` under the root, following symlinks, and checks the result is still inside it.
    fn locate(&self, relative: &Path) -> Located {
        let Some(root) = &self.root else {
            return Located::Missing;
        };
        let Ok(found) = root.join(relative).canonicalize() else {
            return Located::Missing;
        };
        if !found.starts_with(root) {
            return Located::Escaped;
        }
        let found = if found.is_dir() {
            // The index may itself be a symlink, so it is resolved and checked like any other path.
            let Ok(index) = found.join(&self.index).canonicalize() else {
                return Located::Missing;
            };
            if !index.starts_with(root) {
                return Located::Escaped;
            }
            index
        } else {
            found
        };
        if found.is_file() {
            Located::File(found)
        } else {
            Located::Missing
        }
    }

    async fn file_response(
        &self,
        file: &Path,
        head_only: bool,
    ) -> Result<Response<Full<Bytes>>, StatusCode> {
        let size = std::fs::metadata(file).map(|m| m.len()).map_err(|e| {
            warn!(file = %file.display(), error = %e, "cannot stat a public file");
            StatusCode::INTERNAL_SERVER_ERROR
        })?;
        if size > MAX_FILE_BYTES {
            warn!(file = %file.display(), size, limit = MAX_FILE_BYTES, "public file too large to serve");
            return Err(StatusCode::INTERNAL_SERVER_ERROR);
        }
        let body = if head_only {
            Bytes::new()
        } else {
            read_whole(file, size).await.map_err(|e| {
                warn!(file = %file.display(), error = %e, "cannot read a public file");
                StatusCode::INTERNAL_SERVER_ERROR
            })?
        };
        let mut response = Response::builder()
            .header(CONTENT_TYPE, content_type(file))
            .header(CONTENT_LENGTH, size);
        if let Some(cache_control) = &self.cache_control {
            response = response.header(CACHE_CONTROL, cache_control);
        }
        response.body(Full::new(body)).map_err(|e| {
            warn!(file = %file.display(), error = %e, "cannot build a file response");
            StatusCode::INTERNAL_SERVER_ERROR
        })
    }
}

/// Reads `size` bytes of `file` through io_uring; a file that shrank meanwhile is served as it is now.
async fn read_whole(file: &Path, size: u64) -> glommio::Result<Bytes, ()> {
    let opened = BufferedFile::open(file).await?;
    // `size` is at most MAX_FILE_BYTES, so it fits in usize on every target glommio supports.
    let read = opened.read_at(0, size as usize).await;
    opened.close().await?;
    Ok(Bytes::copy_from_slice(&read?))
}

/// `Content-Type` from the extension; text types say UTF-8 because that is what the public files are.
fn content_type(file: &Path) -> String {
    let mime = mime_guess::from_path(file).first_or_octet_stream();
    if mime.type_() == mime_guess::mime::TEXT && mime.get_param("charset").is_none() {
        format!("{mime}; charset=utf-8")
    } else {
        mime.to_string()
    }
}

/// Applies the lexical fence: strips the mount, then decodes and checks each segment once.
fn target(mount: &str, path: &str) -> Target {
    let Some(rest) = path.strip_prefix(mount) else {
        return Target::Unmounted;
    };
    // `/static` and `/static/...` are under the mount `/static`; `/staticfoo` is not.
    let rest = match rest.strip_prefix('/') {
        Some(rest) => rest,
        None if rest.is_empty() => "",
        None => return Target::Unmounted,
    };
    let mut relative = PathBuf::new();
    let segments: Vec<&str> = rest.split('/').collect();
    let last = segments.len() - 1;
    for (i, raw) in segments.into_iter().enumerate() {
        let Ok(segment) = percent_decode_str(raw).decode_utf8() else {
            return Target::Undecodable;
        };
        if segment.is_empty() {
            if i == last {
                // A trailing slash names a directory; its index is found by `locate`.
                continue;
            }
            return Target::Forbidden;
        }
        if segment == ".." || segment == "." || segment.contains(['/', '\\', '\0']) {
            return Target::Forbidden;
        }
        relative.push(segment.as_ref());
    }
    Target::Inside(relative)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    #[test]
    fn plain_paths_map_under_the_mount() {
        assert_eq!(target("", "/"), Target::Inside(PathBuf::new()));
        assert_eq!(
            target("", "/app.js"),
            Target::Inside(PathBuf::from("app.js"))
        );
        assert_eq!(
            target("", "/sub/dir/"),
            Target::Inside(PathBuf::from("sub/dir"))
        );
        assert_eq!(
            target("", "/a%20b.txt"),
            Target::Inside(PathBuf::from("a b.txt"))
        );
        assert_eq!(target("/static", "/static"), Target::Inside(PathBuf::new()));
        assert_eq!(
            target("/static", "/static/app.js"),
            Target::Inside(PathBuf::from("app.js"))
        );
        assert_eq!(target("/static", "/staticfoo/app.js"), Target::Unmounted);
        assert_eq!(target("/static", "/app.js"), Target::Unmounted);
    }

    #[test]
    fn traversal_forms_are_forbidden() {
        for path in [
            "/..",
            "/../secret.txt",
            "/sub/../../secret.txt",
            "/./app.js",
            "/%2e%2e/secret.txt",
            "/%2E%2E/secret.txt",
            "/.%2e/secret.txt",
            "/..%2fsecret.txt",
            "/sub%2f..%2f..%2fsecret.txt",
            "/..%5csecret.txt",
            "/..\\secret.txt",
            "/app.js%00.html",
            "//etc/passwd",
            "/sub//dir/",
        ] {
            assert_eq!(target("", path), Target::Forbidden, "{path}");
        }
        assert_eq!(
            target("/static", "/static/../secret.txt"),
            Target::Forbidden
        );
        // Decoding happens once: `%252e%252e` is the literal name `%2e%2e`, a plain (missing) file.
        assert_eq!(
            target("", "/%252e%252e"),
            Target::Inside(PathBuf::from("%2e%2e"))
        );
    }

    #[test]
    fn undecodable_segments_are_bad_requests() {
        assert_eq!(target("", "/%ff%fe"), Target::Undecodable);
    }

    #[test]
    fn text_types_carry_a_charset() {
        assert_eq!(
            content_type(Path::new("index.html")),
            "text/html; charset=utf-8"
        );
        assert!(content_type(Path::new("app.js")).contains("javascript"));
        assert_eq!(content_type(Path::new("blob")), "application/octet-stream");
    }

    /// A public directory with a symlink to a secret beside it; removed on drop.
    struct Tree {
        base: PathBuf,
    }

    impl Tree {
        fn new(name: &str) -> Tree {
            let base =
                std::env::temp_dir().join(format!("roomcast-static-{name}-{}", std::process::id()));
            let _ = fs::remove_dir_all(&base);
            fs::create_dir_all(base.join("public/sub")).unwrap();
            fs::write(base.join("public/index.html"), "<h1>home</h1>").unwrap();
            fs::write(base.join("public/sub/page.txt"), "page").unwrap();
            fs::write(base.join("secret.txt"), "secret").unwrap();
            fs::create_dir_all(base.join("outside")).unwrap();
            fs::write(base.join("outside/index.html"), "secret index").unwrap();
            std::os::unix::fs::symlink(base.join("secret.txt"), base.join("public/leak.txt"))
                .unwrap();
            std::os::unix::fs::symlink(base.join("outside"), base.join("public/leakdir")).unwrap();
            std::os::unix::fs::symlink(
                base.join("public/sub/page.txt"),
                base.join("public/alias.txt"),
            )
            .unwrap();
            Tree { base }
        }

        fn files(&self) -> StaticFiles {
            StaticFiles::new(&PublicSettings {
                path: self.base.join("public"),
                mount: "/".into(),
                index: "index.html".into(),
                cache_control: "no-cache".into(),
                spa_fallback: false,
            })
        }
    }

    impl Drop for Tree {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.base);
        }
    }

    #[test]
    fn symlinks_are_followed_only_inside_the_root() {
        let tree = Tree::new("symlinks");
        let files = tree.files();
        let root = tree.base.join("public").canonicalize().unwrap();
        assert_eq!(
            files.locate(Path::new("")),
            Located::File(root.join("index.html"))
        );
        assert_eq!(
            files.locate(Path::new("alias.txt")),
            Located::File(root.join("sub/page.txt"))
        );
        assert_eq!(files.locate(Path::new("leak.txt")), Located::Escaped);
        assert_eq!(files.locate(Path::new("leakdir")), Located::Escaped);
        assert_eq!(
            files.locate(Path::new("leakdir/index.html")),
            Located::Escaped
        );
        assert_eq!(files.locate(Path::new("sub")), Located::Missing);
        assert_eq!(files.locate(Path::new("nope.txt")), Located::Missing);
    }

    #[test]
    fn a_missing_root_serves_nothing() {
        let files = StaticFiles::new(&PublicSettings {
            path: std::env::temp_dir().join("roomcast-static-no-such-dir"),
            mount: "/".into(),
            index: "index.html".into(),
            cache_control: "no-cache".into(),
            spa_fallback: true,
        });
        assert_eq!(files.locate(Path::new("")), Located::Missing);
    }

    proptest::proptest! {
        /// Whatever a client puts in the path, a target is made of plain names only: no component can
        /// climb out of the root or be absolute, however it was encoded.
        #[test]
        fn no_path_escapes_the_root(
            segments in proptest::collection::vec(
                proptest::prop_oneof![
                    proptest::strategy::Just("..".to_owned()),
                    proptest::strategy::Just(".".to_owned()),
                    proptest::strategy::Just("%2e%2e".to_owned()),
                    proptest::strategy::Just("%2E.".to_owned()),
                    proptest::strategy::Just("%252e%252e".to_owned()),
                    proptest::strategy::Just("..%2f..".to_owned()),
                    proptest::strategy::Just("%5c..".to_owned()),
                    proptest::strategy::Just("%00".to_owned()),
                    proptest::strategy::Just(String::new()),
                    "[a-z0-9._%-]{1,8}",
                    ".{1,6}",
                ],
                0..8,
            ),
        ) {
            let path = format!("/{}", segments.join("/"));
            if let Target::Inside(relative) = target("", &path) {
                for component in relative.components() {
                    proptest::prop_assert!(
                        matches!(component, std::path::Component::Normal(_)),
                        "{path} -> {relative:?}"
                    );
                }
            }
        }
    }
}
