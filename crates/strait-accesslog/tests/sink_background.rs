//! Background flushing, in its own test binary (and a single test) so nothing else calls
//! `flush_all()` and masks whether the flush thread did the work.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use strait_accesslog::{AccessLogSink, Formatter, LogContext, SinkOptions, set_flush_interval};

fn temp_path(tag: &str) -> PathBuf {
    std::env::temp_dir().join(format!(
        "strait-accesslog-bg-{}-{tag}.log",
        std::process::id()
    ))
}

fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_default()
}

fn wait_for(p: &Path, want: &str, limit: Duration) -> Duration {
    let start = Instant::now();
    while read(p) != want && start.elapsed() < limit {
        std::thread::sleep(Duration::from_millis(5));
    }
    start.elapsed()
}

#[test]
fn flush_thread_writes_on_interval_and_on_threshold() -> std::io::Result<()> {
    // 1. Interval: default 1 s.
    let p = temp_path("interval");
    let sink = AccessLogSink::file(&p)?;
    let f =
        Formatter::parse_text("%RESPONSE_CODE% %REQ(:PATH)%\n").map_err(std::io::Error::other)?;
    let mut line = Vec::new();
    f.render(
        &LogContext {
            response_code: 200,
            path: Some("/a"),
            ..Default::default()
        },
        &mut line,
    );
    assert!(sink.write(&line));
    // write() itself never does I/O: nothing is on disk right after it returns.
    assert_eq!(read(&p), "");
    let waited = wait_for(&p, "200 /a\n", Duration::from_secs(15));
    assert_eq!(read(&p), "200 /a\n");
    assert!(
        waited <= Duration::from_secs(6),
        "interval flush took {waited:?}"
    );
    assert_eq!(sink.buffered_bytes(), 0);

    // 2. Threshold: a sink with a tiny threshold is flushed long before the interval.
    set_flush_interval(Duration::from_secs(30));
    // set_flush_interval wakes the flusher once; let that pass complete first.
    std::thread::sleep(Duration::from_millis(200));
    let q = temp_path("threshold");
    let small = AccessLogSink::file_with_options(
        &q,
        SinkOptions {
            flush_threshold: 16,
            max_buffer_bytes: 1 << 20,
        },
    )?;
    small.write(b"short\n");
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(
        read(&q),
        "",
        "below threshold, interval is 30 s: nothing written yet"
    );
    small.write(b"0123456789abcdef\n");
    let waited = wait_for(&q, "short\n0123456789abcdef\n", Duration::from_secs(15));
    assert!(
        waited < Duration::from_secs(10),
        "threshold flush took {waited:?}"
    );

    // 3. A shorter interval takes effect.
    set_flush_interval(Duration::from_millis(50));
    small.write(b"x\n");
    let waited = wait_for(&q, "short\n0123456789abcdef\nx\n", Duration::from_secs(15));
    assert!(
        waited < Duration::from_secs(10),
        "50 ms interval flush took {waited:?}"
    );

    // 4. reopen_all(): after rotation, the next flush writes to a fresh file.
    let rotated = q.with_extension("log.1");
    std::fs::rename(&q, &rotated)?;
    strait_accesslog::reopen_all();
    std::thread::sleep(Duration::from_millis(200));
    small.write(b"after rotate\n");
    wait_for(&q, "after rotate\n", Duration::from_secs(15));
    assert_eq!(read(&q), "after rotate\n");
    assert_eq!(read(&rotated), "short\n0123456789abcdef\nx\n");

    for f in [&p, &q, &rotated] {
        let _ = std::fs::remove_file(f);
    }

    // Runs after the timing checks: it calls flush_all(), which would mask them.
    many_writers_one_file_lines_stay_whole()
}

fn many_writers_one_file_lines_stay_whole() -> std::io::Result<()> {
    let p = temp_path("concurrent");
    let sink = AccessLogSink::file(&p)?;
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let sink = AccessLogSink::file(&p);
            std::thread::spawn(move || {
                if let Ok(sink) = sink {
                    for i in 0..2000 {
                        sink.write(
                            format!("thread={t} line={i:05} {}\n", "x".repeat(40)).as_bytes(),
                        );
                    }
                }
            })
        })
        .collect();
    for t in threads {
        let _ = t.join();
    }
    strait_accesslog::flush_all()?;
    let text = read(&p);
    assert_eq!(text.lines().count(), 8000);
    assert!(
        text.lines()
            .all(|l| l.starts_with("thread=") && l.ends_with(&"x".repeat(40)))
    );
    assert_eq!(sink.dropped_lines(), 0);
    let _ = std::fs::remove_file(&p);
    Ok(())
}
