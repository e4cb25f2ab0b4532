use super::*;

/// A writer whose bytes the test can still read while the view owns it.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    fn text(&self) -> String {
        String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
    }
}

/// What a terminal `columns` wide shows after `bytes`: scrollback and screen as one
/// list of rows. It knows exactly the escapes the view may use and panics on any
/// other control character, and on a row written past its width.
fn screen(bytes: &str, columns: usize) -> Vec<String> {
    let mut rows: Vec<Vec<char>> = vec![Vec::new()];
    let (mut row, mut col) = (0usize, 0usize);
    let mut chars = bytes.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\n' => {
                row += 1;
                col = 0;
                if rows.len() <= row {
                    rows.push(Vec::new());
                }
            }
            '\r' => col = 0,
            '\x1b' => {
                assert_eq!(chars.next(), Some('['), "only CSI escapes are used");
                let mut param = String::new();
                let command = loop {
                    let c = chars.next().expect("an unfinished escape");
                    if c.is_ascii_digit() || c == ';' {
                        param.push(c);
                    } else {
                        break c;
                    }
                };
                let n: usize = param.parse().unwrap_or(1);
                match command {
                    'A' => row = row.checked_sub(n).expect("cursor moved above the top"),
                    'K' => {
                        assert_eq!(param, "2");
                        rows[row].clear();
                    }
                    'J' => {
                        rows[row].truncate(col);
                        rows.truncate(row + 1);
                    }
                    'm' => {}
                    other => panic!("unexpected escape {other:?}"),
                }
            }
            c if c.is_control() => panic!("a raw control character {c:?} reached the terminal"),
            c => {
                assert!(col < columns, "a line wider than the terminal: {rows:?}");
                let line = &mut rows[row];
                if line.len() <= col {
                    line.resize(col, ' ');
                    line.push(c);
                } else {
                    line[col] = c;
                }
                col += 1;
            }
        }
    }
    // The cursor's empty row below the last line is not content.
    if rows.last().is_some_and(|r| r.is_empty()) {
        rows.pop();
    }
    rows.into_iter().map(|r| r.into_iter().collect()).collect()
}

fn new_view(columns: usize, rows: usize, colour: bool) -> (View, Captured) {
    let captured = Captured::default();
    let view = View {
        out: Box::new(captured.clone()),
        size: TerminalSize::Fixed { columns, rows },
        colour,
        running: Vec::new(),
        drawn: 0,
        dirty: false,
        finished: false,
    };
    (view, captured)
}

fn started(stage: &str, step: usize, steps: usize, text: &str) -> Event {
    Event::StepStarted {
        stage: stage.into(),
        step,
        steps,
        text: text.into(),
    }
}

fn output(stage: &str, step: usize, line: &str) -> Event {
    Event::StepOutput {
        stage: stage.into(),
        step,
        line: line.into(),
    }
}

fn done(stage: &str, step: usize, seconds: f64, layer_size: Option<u64>) -> Event {
    Event::StepDone {
        stage: stage.into(),
        step,
        seconds,
        layer_size,
    }
}

#[test]
fn interleaved_stages_show_both_running_steps_with_their_last_lines() {
    let (mut view, out) = new_view(60, 40, false);
    let t0 = Instant::now();
    let at = |ms: u64| t0 + Duration::from_millis(ms);
    view.event(
        &Event::BuildStarted {
            stages: vec!["a".into(), "b".into()],
        },
        at(0),
    );
    view.event(&started("a", 1, 2, "FROM busybox"), at(0));
    view.event(&done("a", 1, 0.04, None), at(40));
    view.event(&started("a", 2, 2, "RUN make"), at(50));
    view.event(&started("b", 2, 3, "RUN test"), at(60));
    for i in 1..=7 {
        view.event(&output("a", 2, &format!("a line {i}")), at(100 + i));
        view.event(&output("b", 2, &format!("b line {i}")), at(100 + i));
    }
    view.draw(&[], at(3250));
    assert_eq!(
        screen(&out.text(), 60),
        [
            "building stages: a, b",
            "[a 1/2] FROM busybox  DONE 0.0s",
            "[a 2/2] RUN make  3.2s",
            "  a line 3",
            "  a line 4",
            "  a line 5",
            "  a line 6",
            "  a line 7",
            "[b 2/3] RUN test  3.2s",
            "  b line 3",
            "  b line 4",
            "  b line 5",
            "  b line 6",
            "  b line 7",
        ]
    );

    // A finished step goes above the block for good, the other keeps running.
    view.event(&done("a", 2, 3.3, Some(12_345)), at(3300));
    view.event(&output("b", 2, "b line 8"), at(3400));
    view.tick(at(4000));
    assert_eq!(
        screen(&out.text(), 60),
        [
            "building stages: a, b",
            "[a 1/2] FROM busybox  DONE 0.0s",
            "[a 2/2] RUN make  DONE 3.3s (layer 12.3 kB)",
            "[b 2/3] RUN test  3.9s",
            "  b line 4",
            "  b line 5",
            "  b line 6",
            "  b line 7",
            "  b line 8",
        ]
    );

    // At the end the block is cleared and the summary printed as plain does.
    view.event(&done("b", 2, 4.0, None), at(4100));
    view.event(
        &Event::StepCached {
            stage: "b".into(),
            step: 3,
            layer_size: 10,
            source: "registry".into(),
        },
        at(4100),
    );
    view.event(
        &Event::BuildDone {
            image_id: "sha256:abc".into(),
            manifest: "sha256:def".into(),
            tags: vec!["app:1".into()],
            seconds: 4.2,
        },
        at(4200),
    );
    assert_eq!(
        screen(&out.text(), 60),
        [
            "building stages: a, b",
            "[a 1/2] FROM busybox  DONE 0.0s",
            "[a 2/2] RUN make  DONE 3.3s (layer 12.3 kB)",
            "[b 2/3] RUN test  DONE 4.0s",
            "[b 3]  CACHED (from the registry cache)",
            "writing image sha256:abc done (4.2s)",
            "naming to app:1 done",
        ]
    );
    let bytes = out.text().len();
    view.tick(at(5000));
    view.fail(at(5000));
    assert_eq!(out.text().len(), bytes, "nothing is drawn after the build");
}

#[test]
fn the_block_moves_the_cursor_up_and_clears_lines() {
    let (mut view, out) = new_view(40, 20, false);
    let t0 = Instant::now();
    view.event(&started("s", 2, 2, "RUN x"), t0);
    view.event(&output("s", 2, "one"), t0);
    view.tick(t0 + TICK);
    let text = out.text();
    assert!(text.contains("\x1b[1A\r"), "{text:?}");
    assert!(text.contains("\x1b[2K"), "{text:?}");
    view.event(&done("s", 2, 0.1, None), t0 + TICK);
    // The two-line block became one permanent line: the rest is cleared.
    assert!(out.text().ends_with("\x1b[J"), "{:?}", out.text());
}

#[test]
fn long_lines_are_cut_to_the_width_keeping_the_timer() {
    let (mut view, out) = new_view(30, 20, false);
    let t0 = Instant::now();
    view.event(
        &started("stage", 2, 2, &format!("RUN {}", "x".repeat(80))),
        t0,
    );
    view.event(&output("stage", 2, &"y".repeat(100)), t0);
    view.draw(&[], t0 + Duration::from_millis(1500));
    // `screen` panics on anything written past column 30.
    let rows = screen(&out.text(), 30);
    assert_eq!(
        rows,
        [
            "[stage 2/2] RUN xxxxxx…  1.5s",
            "  yyyyyyyyyyyyyyyyyyyyyyyyyy…"
        ]
    );
    assert!(rows.iter().all(|r| r.chars().count() < 30));
}

#[test]
fn control_characters_from_a_command_are_escaped() {
    let (mut view, out) = new_view(80, 20, true);
    let t0 = Instant::now();
    view.event(&started("s", 2, 2, "RUN x"), t0);
    view.event(
        &output("s", 2, "red \x1b[31mtext\x1b[0m\x07 \x08\u{9b}2J"),
        t0,
    );
    view.event(&output("s", 2, "downloading 10%\rdownloading 100%\r"), t0);
    view.event(&output("s", 2, "a\tb"), t0);
    view.draw(&[], t0);
    // `screen` panics on a control character other than the view's own escapes.
    let rows = screen(&out.text(), 80);
    assert_eq!(
        &rows[1..],
        [
            "  red ^[[31mtext^[[0m^G ^H\\u{9b}2J",
            "  downloading 100%",
            "  a b"
        ]
    );
    // Colour is on here: the output lines are dimmed.
    assert!(out.text().contains(&format!("{DIM}  a b{RESET}")));
}

#[test]
fn no_colour_means_no_sgr_escapes() {
    let (mut view, out) = new_view(80, 20, false);
    let t0 = Instant::now();
    view.event(&started("s", 2, 2, "RUN x"), t0);
    view.event(&output("s", 2, "hello"), t0);
    view.event(&done("s", 2, 0.5, Some(100)), t0);
    view.event(
        &Event::Warning {
            message: "careful".into(),
        },
        t0,
    );
    let text = out.text();
    for sgr in [RESET, DIM, GREEN, YELLOW] {
        assert!(!text.contains(sgr), "{text:?}");
    }
    assert_eq!(
        screen(&out.text(), 80),
        ["[s 2/2] RUN x  DONE 0.5s (layer 100 B)", "WARNING: careful"]
    );
}

#[test]
fn a_failed_build_leaves_the_running_steps_and_their_last_lines() {
    let (mut view, out) = new_view(80, 20, false);
    let t0 = Instant::now();
    view.event(&started("s", 2, 3, "RUN ./configure && make"), t0);
    for i in 1..=12 {
        view.event(&output("s", 2, &format!("line {i}")), t0);
    }
    view.tick(t0 + Duration::from_secs(1));
    view.fail(t0 + Duration::from_secs(2));
    let mut expected = vec!["[s 2/3] RUN ./configure && make  did not finish (2.0s)".to_string()];
    expected.extend((3..=12).map(|i| format!("  line {i}")));
    assert_eq!(screen(&out.text(), 80), expected);
}

#[test]
fn a_block_taller_than_the_terminal_is_shortened() {
    let (mut view, out) = new_view(40, 6, false);
    let t0 = Instant::now();
    for stage in ["a", "b", "c"] {
        view.event(&started(stage, 2, 2, "RUN x"), t0);
        for i in 0..5 {
            view.event(&output(stage, 2, &format!("{stage}{i}")), t0);
        }
    }
    view.draw(&[], t0);
    // Five rows to use: three headers and, in the two left, no room for a line each.
    assert_eq!(
        screen(&out.text(), 40),
        [
            "[a 2/2] RUN x  0.0s",
            "[b 2/2] RUN x  0.0s",
            "[c 2/2] RUN x  0.0s"
        ]
    );
    let (mut view, out) = new_view(40, 3, false);
    for stage in ["a", "b", "c"] {
        view.event(&started(stage, 2, 2, "RUN x"), t0);
    }
    assert_eq!(
        screen(&out.text(), 40),
        ["[a 2/2] RUN x  0.0s", "… and 2 more running"]
    );
}

#[test]
fn the_ticker_redraws_timers_and_stops_on_drop() {
    let captured = Captured::default();
    let mut progress = TtyProgress::new(
        Box::new(captured.clone()),
        TerminalSize::Fixed {
            columns: 80,
            rows: 20,
        },
        false,
    );
    progress.event(&started("s", 2, 2, "RUN sleep 1"));
    let first = captured.text().len();
    std::thread::sleep(Duration::from_millis(450));
    let redraws = captured.text()[first..].matches("\x1b[1A").count();
    assert!(redraws >= 2, "the ticker redrew {redraws} times in 450 ms");

    // Lines from another thread go above the block.
    let printer = progress.printer();
    std::thread::spawn(move || printer.line("Pulled sha256:0123 1.0 kB"))
        .join()
        .unwrap();
    progress.event(&done("s", 2, 0.5, None));
    drop(progress);
    let after_drop = captured.text();
    std::thread::sleep(Duration::from_millis(250));
    assert_eq!(captured.text(), after_drop, "the ticker still draws");
    assert_eq!(
        screen(&after_drop, 80),
        [
            "Pulled sha256:0123 1.0 kB",
            "[s 2/2] RUN sleep 1  DONE 0.5s"
        ]
    );
}

#[test]
fn sizes_are_decimal() {
    assert_eq!(human_size(999), "999 B");
    assert_eq!(human_size(12_345), "12.3 kB");
    assert_eq!(human_size(5_000_000), "5.0 MB");
}
