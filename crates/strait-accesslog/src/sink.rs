//! Non-blocking access-log sinks.
//!
//! [`AccessLogSink::write`] only appends the line to an in-memory buffer under a mutex held
//! for the copy; it never touches the file. One background thread
//! (`strait-accesslog-flush`) writes every sink's buffer out every flush interval (default
//! 1 s, [`set_flush_interval`]) or sooner when a buffer passes the flush threshold (64 KiB,
//! Envoy's `--file-flush-min-size-kb` default). A buffer that would exceed
//! [`SinkOptions::max_buffer_bytes`] drops the line and counts it ([`AccessLogSink::dropped_lines`]).
//!
//! Sinks are shared by path: every logger that names the same file gets the same
//! [`Arc<AccessLogSink>`], so lines from different loggers never interleave mid-line. The
//! registry holds weak references; when the last logger using a file goes away (e.g. after a
//! config update) the sink flushes what it still buffers and closes the file.
//!
//! [`flush_all`] writes every sink out synchronously (call it on shutdown);
//! [`reopen_all`] makes every file sink close and reopen its file on the next flush (log
//! rotation, SIGUSR1 in Envoy).

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, Weak};
use std::thread::{self, Thread};
use std::time::Duration;

/// Default flush interval.
pub const DEFAULT_FLUSH_INTERVAL: Duration = Duration::from_secs(1);
/// Default buffered size that triggers an early flush (Envoy: 64 KiB).
pub const DEFAULT_FLUSH_THRESHOLD: usize = 64 * 1024;
/// Default cap on buffered bytes per sink before lines are dropped.
pub const DEFAULT_MAX_BUFFER_BYTES: usize = 16 * 1024 * 1024;

/// Per-sink buffering limits. When several loggers share a path, the options of the one that
/// created the sink apply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SinkOptions {
    /// Buffered bytes that wake the flusher before the interval elapses.
    pub flush_threshold: usize,
    /// Hard cap on buffered bytes; lines that do not fit are dropped and counted.
    pub max_buffer_bytes: usize,
}

impl Default for SinkOptions {
    fn default() -> Self {
        SinkOptions {
            flush_threshold: DEFAULT_FLUSH_THRESHOLD,
            max_buffer_bytes: DEFAULT_MAX_BUFFER_BYTES,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Target {
    File(PathBuf),
    Stdout,
    Stderr,
}

/// A buffered, shared access-log destination (a file, stdout or stderr).
pub struct AccessLogSink {
    target: Target,
    options: SinkOptions,
    pending: Mutex<Vec<u8>>,
    io: Mutex<Io>,
    flush_requested: AtomicBool,
    reopen_requested: AtomicBool,
    dropped_lines: AtomicU64,
    write_errors: AtomicU64,
}

struct Io {
    file: Option<File>,
    /// Buffer swapped with `pending` on flush, so flushing does not allocate.
    spare: Vec<u8>,
    /// Whether the last write failed (to log failures once per streak).
    failing: bool,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding a sink lock cannot leave the buffer in an unsafe state.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl AccessLogSink {
    /// The shared sink for `path`, opening (creating, appending) the file if no logger uses
    /// it yet. `/dev/stdout` and `/dev/stderr` map to [`stdout`](Self::stdout) /
    /// [`stderr`](Self::stderr). Fails if the file cannot be opened.
    pub fn file(path: impl AsRef<Path>) -> io::Result<Arc<AccessLogSink>> {
        Self::file_with_options(path, SinkOptions::default())
    }

    /// [`file`](Self::file) with explicit buffering limits (used only if this call creates
    /// the sink).
    pub fn file_with_options(
        path: impl AsRef<Path>,
        options: SinkOptions,
    ) -> io::Result<Arc<AccessLogSink>> {
        let path = path.as_ref();
        let target = match path.to_str() {
            Some("/dev/stdout") => Target::Stdout,
            Some("/dev/stderr") => Target::Stderr,
            _ => Target::File(std::path::absolute(path)?),
        };
        get_or_create(target, options)
    }

    /// The shared stdout sink.
    pub fn stdout() -> Arc<AccessLogSink> {
        match get_or_create(Target::Stdout, SinkOptions::default()) {
            Ok(s) => s,
            Err(_) => unreachable!("stdout sinks open nothing and cannot fail"),
        }
    }

    /// The shared stderr sink.
    pub fn stderr() -> Arc<AccessLogSink> {
        match get_or_create(Target::Stderr, SinkOptions::default()) {
            Ok(s) => s,
            Err(_) => unreachable!("stderr sinks open nothing and cannot fail"),
        }
    }

    fn new(target: Target, options: SinkOptions) -> io::Result<AccessLogSink> {
        let file = match &target {
            Target::File(p) => Some(open_append(p)?),
            Target::Stdout | Target::Stderr => None,
        };
        Ok(AccessLogSink {
            target,
            options,
            pending: Mutex::new(Vec::with_capacity(options.flush_threshold.min(64 * 1024))),
            io: Mutex::new(Io {
                file,
                spare: Vec::new(),
                failing: false,
            }),
            flush_requested: AtomicBool::new(false),
            reopen_requested: AtomicBool::new(false),
            dropped_lines: AtomicU64::new(0),
            write_errors: AtomicU64::new(0),
        })
    }

    /// Queues one already-rendered line (it should end with `\n`). Never blocks on I/O.
    /// Returns `false` when the line was dropped because the buffer is full.
    pub fn write(&self, line: &[u8]) -> bool {
        let over_threshold = {
            let mut p = lock(&self.pending);
            if p.len() + line.len() > self.options.max_buffer_bytes {
                drop(p);
                self.dropped_lines.fetch_add(1, Ordering::Relaxed);
                return false;
            }
            p.extend_from_slice(line);
            p.len() >= self.options.flush_threshold
        };
        if over_threshold && !self.flush_requested.swap(true, Ordering::AcqRel) {
            wake_flusher();
        }
        true
    }

    /// Lines dropped because the buffer was full.
    pub fn dropped_lines(&self) -> u64 {
        self.dropped_lines.load(Ordering::Relaxed)
    }

    /// Failed writes / reopens (each also logged once per failure streak via `tracing`).
    pub fn write_errors(&self) -> u64 {
        self.write_errors.load(Ordering::Relaxed)
    }

    /// Bytes currently buffered and not yet handed to the OS.
    pub fn buffered_bytes(&self) -> usize {
        lock(&self.pending).len()
    }

    /// The file path, or `None` for stdout / stderr.
    pub fn path(&self) -> Option<&Path> {
        match &self.target {
            Target::File(p) => Some(p),
            Target::Stdout | Target::Stderr => None,
        }
    }

    /// Writes everything buffered now, on the calling thread (reopening first if a reopen
    /// was requested).
    pub fn flush(&self) -> io::Result<()> {
        let mut io = lock(&self.io);
        {
            let mut p = lock(&self.pending);
            debug_assert!(io.spare.is_empty());
            std::mem::swap(&mut *p, &mut io.spare);
        }
        self.flush_requested.store(false, Ordering::Release);
        let mut result = Ok(());
        if self.reopen_requested.swap(false, Ordering::AcqRel)
            && let Target::File(p) = &self.target
        {
            io.file = None;
            match open_append(p) {
                Ok(f) => io.file = Some(f),
                Err(e) => result = Err(e),
            }
        }
        if !io.spare.is_empty() {
            let Io { file, spare, .. } = &mut *io;
            let r = match &self.target {
                Target::Stdout => {
                    let mut out = io::stdout().lock();
                    out.write_all(spare).and_then(|()| out.flush())
                }
                Target::Stderr => io::stderr().lock().write_all(spare),
                Target::File(p) => {
                    if file.is_none() {
                        match open_append(p) {
                            Ok(f) => *file = Some(f),
                            Err(e) => result = Err(e),
                        }
                    }
                    match file {
                        Some(f) => f.write_all(spare),
                        None => Ok(()),
                    }
                }
            };
            if let Err(e) = r {
                // Like Envoy, data that cannot be written is discarded rather than retried
                // forever; a reopen on the next flush may recover.
                if let Target::File(_) = self.target {
                    io.file = None;
                }
                result = Err(e);
            }
            io.spare.clear();
            if io.spare.capacity() > 4 * self.options.flush_threshold.max(64 * 1024) {
                io.spare.shrink_to(self.options.flush_threshold);
            }
        }
        match &result {
            Ok(()) => io.failing = false,
            Err(e) => {
                self.write_errors.fetch_add(1, Ordering::Relaxed);
                if !io.failing {
                    tracing::error!(target: "strait::accesslog", sink = %self.describe(), error = %e, "access log write failed");
                }
                io.failing = true;
            }
        }
        result
    }

    /// Asks for the file to be closed and reopened on the next flush (no-op for stdio).
    pub fn request_reopen(&self) {
        self.reopen_requested.store(true, Ordering::Release);
    }

    fn describe(&self) -> String {
        match &self.target {
            Target::File(p) => p.display().to_string(),
            Target::Stdout => "/dev/stdout".to_owned(),
            Target::Stderr => "/dev/stderr".to_owned(),
        }
    }

    fn needs_flush(&self) -> bool {
        self.reopen_requested.load(Ordering::Acquire) || !lock(&self.pending).is_empty()
    }
}

impl std::fmt::Debug for AccessLogSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AccessLogSink")
            .field("target", &self.describe())
            .field("buffered_bytes", &self.buffered_bytes())
            .field("dropped_lines", &self.dropped_lines())
            .finish()
    }
}

impl Drop for AccessLogSink {
    fn drop(&mut self) {
        let _ = self.flush();
    }
}

fn open_append(p: &Path) -> io::Result<File> {
    OpenOptions::new().create(true).append(true).open(p)
}

// ---------------------------------------------------------------------------------------
// Registry and flusher thread
// ---------------------------------------------------------------------------------------

fn registry() -> &'static Mutex<HashMap<Target, Weak<AccessLogSink>>> {
    static REGISTRY: OnceLock<Mutex<HashMap<Target, Weak<AccessLogSink>>>> = OnceLock::new();
    REGISTRY.get_or_init(|| Mutex::new(HashMap::new()))
}

fn get_or_create(target: Target, options: SinkOptions) -> io::Result<Arc<AccessLogSink>> {
    let sink = {
        let mut reg = lock(registry());
        if let Some(existing) = reg.get(&target).and_then(Weak::upgrade) {
            return Ok(existing);
        }
        reg.retain(|_, w| w.strong_count() > 0);
        let sink = Arc::new(AccessLogSink::new(target.clone(), options)?);
        reg.insert(target, Arc::downgrade(&sink));
        sink
    };
    ensure_flusher();
    Ok(sink)
}

fn live_sinks() -> Vec<Arc<AccessLogSink>> {
    lock(registry())
        .values()
        .filter_map(Weak::upgrade)
        .collect()
}

static FLUSH_INTERVAL_MS: AtomicU64 = AtomicU64::new(DEFAULT_FLUSH_INTERVAL.as_millis() as u64);

/// Sets how often the background thread flushes buffered lines (Envoy's
/// `--file-flush-interval-msec`). Takes effect from the next wakeup.
pub fn set_flush_interval(interval: Duration) {
    let ms = u64::try_from(interval.as_millis())
        .unwrap_or(u64::MAX)
        .max(1);
    FLUSH_INTERVAL_MS.store(ms, Ordering::Relaxed);
    wake_flusher();
}

fn flusher() -> &'static OnceLock<Thread> {
    static FLUSHER: OnceLock<Thread> = OnceLock::new();
    &FLUSHER
}

fn ensure_flusher() {
    flusher().get_or_init(|| {
        let spawned = thread::Builder::new().name("strait-accesslog-flush".to_owned()).spawn(flush_loop);
        match spawned {
            Ok(handle) => handle.thread().clone(),
            Err(e) => {
                // Without a thread, lines still reach disk via flush_all() and on drop.
                tracing::error!(target: "strait::accesslog", error = %e, "cannot start access log flush thread");
                thread::current()
            }
        }
    });
}

fn wake_flusher() {
    if let Some(t) = flusher().get()
        && t.name() == Some("strait-accesslog-flush")
    {
        t.unpark();
    }
}

fn flush_loop() {
    loop {
        thread::park_timeout(Duration::from_millis(
            FLUSH_INTERVAL_MS.load(Ordering::Relaxed),
        ));
        for sink in live_sinks() {
            if sink.needs_flush() {
                // Errors are counted and logged inside flush().
                let _ = sink.flush();
            }
        }
    }
}

/// Flushes every live sink synchronously on the calling thread (shutdown, tests). Returns the
/// first error; every sink is attempted.
pub fn flush_all() -> io::Result<()> {
    let mut first = Ok(());
    for sink in live_sinks() {
        if let Err(e) = sink.flush()
            && first.is_ok()
        {
            first = Err(e);
        }
    }
    first
}

/// Requests every file sink to reopen its file (log rotation). The reopen happens on the
/// background thread's next pass, which this triggers immediately, or on the next
/// [`flush_all`].
pub fn reopen_all() {
    for sink in live_sinks() {
        sink.request_reopen();
    }
    wake_flusher();
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    fn temp_path(tag: &str) -> PathBuf {
        static N: AtomicUsize = AtomicUsize::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        std::env::temp_dir().join(format!(
            "strait-accesslog-{}-{tag}-{n}.log",
            std::process::id()
        ))
    }

    fn read(p: &Path) -> String {
        std::fs::read_to_string(p).unwrap_or_default()
    }

    #[test]
    fn write_then_flush() -> io::Result<()> {
        let p = temp_path("buffered");
        let sink = AccessLogSink::file(&p)?;
        assert!(sink.write(b"one\n"));
        assert!(sink.write(b"two\n"));
        // The background thread may flush at any time; an explicit flush is deterministic.
        sink.flush()?;
        assert_eq!(read(&p), "one\ntwo\n");
        assert_eq!(sink.buffered_bytes(), 0);
        drop(sink);
        let _ = std::fs::remove_file(&p);
        Ok(())
    }

    #[test]
    fn flush_all_covers_every_sink() -> io::Result<()> {
        let (p1, p2) = (temp_path("all1"), temp_path("all2"));
        let (a, b) = (AccessLogSink::file(&p1)?, AccessLogSink::file(&p2)?);
        a.write(b"a\n");
        b.write(b"b\n");
        flush_all()?;
        assert_eq!((read(&p1), read(&p2)), ("a\n".to_owned(), "b\n".to_owned()));
        let _ = std::fs::remove_file(&p1);
        let _ = std::fs::remove_file(&p2);
        Ok(())
    }

    #[test]
    fn same_path_shares_one_sink() -> io::Result<()> {
        let p = temp_path("shared");
        let a = AccessLogSink::file(&p)?;
        let b = AccessLogSink::file(&p)?;
        assert!(Arc::ptr_eq(&a, &b));
        // A relative spelling of the same file shares it too.
        if let Ok(cwd) = std::env::current_dir()
            && let Ok(rel) = p.strip_prefix(&cwd)
        {
            assert!(Arc::ptr_eq(&a, &AccessLogSink::file(rel)?));
        }
        a.write(b"a\n");
        b.write(b"b\n");
        a.flush()?;
        assert_eq!(read(&p), "a\nb\n");
        let _ = std::fs::remove_file(&p);
        Ok(())
    }

    #[test]
    fn overflow_drops_and_counts() -> io::Result<()> {
        let p = temp_path("overflow");
        let sink = AccessLogSink::file_with_options(
            &p,
            SinkOptions {
                flush_threshold: 1 << 20,
                max_buffer_bytes: 10,
            },
        )?;
        assert!(sink.write(b"12345\n"));
        assert!(!sink.write(b"67890\n"));
        assert!(!sink.write(b"abcdefghijkl\n"));
        assert_eq!(sink.dropped_lines(), 2);
        sink.flush()?;
        assert!(sink.write(b"again\n"));
        sink.flush()?;
        assert_eq!(read(&p), "12345\nagain\n");
        let _ = std::fs::remove_file(&p);
        Ok(())
    }

    #[test]
    fn reopen_follows_rotation() -> io::Result<()> {
        let p = temp_path("rotate");
        let rotated = p.with_extension("log.1");
        let sink = AccessLogSink::file(&p)?;
        sink.write(b"before\n");
        sink.flush()?;
        std::fs::rename(&p, &rotated)?;
        sink.write(b"still-old-fd\n");
        sink.flush()?;
        sink.request_reopen();
        sink.write(b"after\n");
        sink.flush()?;
        assert_eq!(read(&rotated), "before\nstill-old-fd\n");
        assert_eq!(read(&p), "after\n");
        let _ = std::fs::remove_file(&p);
        let _ = std::fs::remove_file(&rotated);
        Ok(())
    }

    #[test]
    fn drop_flushes_and_registry_forgets() -> io::Result<()> {
        let p = temp_path("drop");
        let sink = AccessLogSink::file(&p)?;
        sink.write(b"last words\n");
        let weak = Arc::downgrade(&sink);
        drop(sink);
        // The flusher thread may briefly hold a strong reference while scanning.
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while weak.strong_count() > 0 && std::time::Instant::now() < deadline {
            thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(read(&p), "last words\n");
        let again = AccessLogSink::file(&p)?;
        assert!(!std::ptr::eq(Arc::as_ptr(&again), weak.as_ptr()) || weak.strong_count() == 0);
        let _ = std::fs::remove_file(&p);
        Ok(())
    }

    #[test]
    fn open_failure_is_reported() {
        let r = AccessLogSink::file("/nonexistent-dir-strait/x.log");
        assert!(r.is_err());
    }

    #[test]
    fn stdio_paths_map_to_stdio_sinks() -> io::Result<()> {
        let a = AccessLogSink::file("/dev/stdout")?;
        let b = AccessLogSink::stdout();
        assert!(Arc::ptr_eq(&a, &b));
        assert!(a.path().is_none());
        let e = AccessLogSink::file("/dev/stderr")?;
        assert!(Arc::ptr_eq(&e, &AccessLogSink::stderr()));
        assert!(!Arc::ptr_eq(&a, &e));
        Ok(())
    }
}
