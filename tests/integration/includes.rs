//! Included access-domain files across reloads: a file whose text and scope are unchanged
//! is shared with the serving model, never answered from stale data.

use std::time::Duration;

use crate::harness::*;

const A: u16 = 1;

/// The main file: two pools over two addresses, in the order given.
fn main_file(pools_swapped: bool) -> String {
    let (first, second) = if pools_swapped {
        ("p2", "p1")
    } else {
        ("p1", "p2")
    };
    let pool = |p: &str| {
        let a = if p == "p1" { "x1" } else { "x2" };
        format!("[[pool]]\nname = \"{p}\"\ntype = \"ipv4\"\naddresses = [\"{a}\"]\n")
    };
    format!(
        "version = 1\ninclude = [\"ads/*.toml\"]\n[server]\nshards = [0]\n[control]\nlisten = \"off\"\n\
         [[zone]]\nname = \"i.test.\"\nsoa = {{ mname = \"ns\", rname = \"h\" }}\nns = [\"ns\"]\n\
         records = [\"ns A 192.0.2.53\"]\n\
         [[address]]\nname = \"x1\"\nvalue = \"192.0.2.1\"\n\
         [[address]]\nname = \"x2\"\nvalue = \"192.0.2.2\"\n{}{}",
        pool(first),
        pool(second)
    )
}

fn ad_file(name: &str, pool: &str) -> String {
    format!(
        "[[access-domain]]\nname = \"{name}.i.test.\"\ntype = \"A\"\npolicy = \"weighted\"\npools = [\"{pool}\"]\n"
    )
}

/// Reloads and returns the "new configuration serving" line of generation `g`.
fn reload(s: &Server, g: u32) -> String {
    s.signal(libc::SIGHUP);
    s.wait_log(&format!("generation={g} "), Duration::from_secs(10))
}

fn answer(s: &Server, name: &str) -> Vec<String> {
    s.udp(&Q::new(&format!("{name}.i.test"), A).build())
        .expect("an answer")
        .answers(A)
}

/// One edited file of two is read again, the other shared; a main file whose pools moved
/// makes every included file be read again (their pool indices would be stale), and the
/// answers are those of the files as they are.
#[test]
fn unchanged_included_files_are_shared_on_reload() {
    let dir = TempDir::new("includes");
    let cfg = dir.write("main.toml", &main_file(false));
    std::fs::create_dir_all(dir.join("ads")).unwrap();
    dir.write("ads/a.toml", &ad_file("a", "p1"));
    dir.write("ads/b.toml", &ad_file("b", "p2"));
    let s = Server::start(&["--config", cfg.to_str().unwrap()]);
    assert_eq!(answer(&s, "a"), ["192.0.2.1"]);
    assert_eq!(answer(&s, "b"), ["192.0.2.2"]);

    dir.write("ads/b.toml", &ad_file("b", "p1"));
    let line = reload(&s, 2);
    assert!(line.contains("include_files=2 include_reused=1"), "{line}");
    assert_eq!(answer(&s, "a"), ["192.0.2.1"]);
    assert_eq!(answer(&s, "b"), ["192.0.2.1"], "the edited file serves");

    let line = reload(&s, 3);
    assert!(line.contains("include_files=2 include_reused=2"), "{line}");

    // The pools swapped in the file keep the places the serving model gave them: every
    // included file is still valid and shared, and the tables compile incrementally.
    dir.write("main.toml", &main_file(true));
    let line = reload(&s, 4);
    assert!(line.contains("include_files=2 include_reused=2"), "{line}");
    assert_eq!(answer(&s, "a"), ["192.0.2.1"]);
    assert_eq!(answer(&s, "b"), ["192.0.2.1"]);

    // A file with an error is rejected (and not kept); fixed, it is read again.
    dir.write("ads/a.toml", &ad_file("a", "nope"));
    s.signal(libc::SIGHUP);
    s.wait_log("unknown pool 'nope'", Duration::from_secs(10));
    assert_eq!(answer(&s, "a"), ["192.0.2.1"], "the old model serves");
    dir.write("ads/a.toml", &ad_file("a", "p2"));
    let line = reload(&s, 5);
    assert!(line.contains("include_files=2 include_reused=1"), "{line}");
    assert_eq!(answer(&s, "a"), ["192.0.2.2"]);
    assert_eq!(answer(&s, "b"), ["192.0.2.1"]);

    // A pool inserted before the others (p0, of x2) is placed after them: p1 and p2 keep
    // their indices and both files are shared.
    let p0 = "[[pool]]\nname = \"p0\"\ntype = \"ipv4\"\naddresses = [\"x2\"]\n";
    let with_p0 = main_file(true).replacen("[[pool]]", &format!("{p0}[[pool]]"), 1);
    dir.write("main.toml", &with_p0);
    let line = reload(&s, 6);
    assert!(line.contains("include_files=2 include_reused=2"), "{line}");
    dir.write("ads/b.toml", &ad_file("b", "p0"));
    let line = reload(&s, 7);
    assert!(line.contains("include_files=2 include_reused=1"), "{line}");
    assert_eq!(
        (answer(&s, "a"), answer(&s, "b")),
        (vec!["192.0.2.2".to_string()], vec!["192.0.2.2".to_string()])
    );
    // p1 removed (nothing names it): the last pool, p0, takes its place; the file that
    // names p0 is validated again and compiled in place, the one that names p2 (whose
    // place is the same) is kept.
    let without_p1 = with_p0.replace(
        "[[pool]]\nname = \"p1\"\ntype = \"ipv4\"\naddresses = [\"x1\"]\n",
        "",
    );
    assert_ne!(without_p1, with_p0);
    dir.write("main.toml", &without_p1);
    let line = reload(&s, 8);
    assert!(line.contains("include_files=2 include_reused=1"), "{line}");
    assert!(line.contains("ads_compiled=1"), "{line}");
    assert_eq!(
        (answer(&s, "a"), answer(&s, "b")),
        (vec!["192.0.2.2".to_string()], vec!["192.0.2.2".to_string()])
    );
}

/// Files older than the racy window are taken by their `stat` alone, and a rewrite is
/// seen even when it keeps the length and puts the old mtime back (the ctime moves); a
/// reload compiles only the access domains of the changed file, keeps the name tables
/// while no name moves, and still finds a name declared twice across a kept and a
/// changed file.
#[test]
fn stat_vouches_for_old_files_and_only_changed_ones_compile() {
    let dir = TempDir::new("includes-stat");
    let cfg = dir.write("main.toml", &main_file(false));
    std::fs::create_dir_all(dir.join("ads")).unwrap();
    dir.write("ads/a.toml", &ad_file("a", "p1"));
    let b = dir.write("ads/b.toml", &ad_file("b", "p2"));
    // Past the two seconds in which a write could hide behind an unchanged stamp.
    std::thread::sleep(Duration::from_millis(2300));
    let s = Server::start(&["--config", cfg.to_str().unwrap()]);
    let line = reload(&s, 2);
    assert!(line.contains("include_reused=2 include_unread=2"), "{line}");
    assert!(
        line.contains("names_kept=true names_patched=false ads_compiled=0"),
        "{line}"
    );

    // Same length, old mtime put back: only the ctime tells.
    let mtime = std::fs::metadata(&b).unwrap().modified().unwrap();
    dir.write("ads/b.toml", &ad_file("b", "p1"));
    let f = std::fs::File::options().write(true).open(&b).unwrap();
    f.set_modified(mtime).unwrap();
    drop(f);
    let line = reload(&s, 3);
    assert!(line.contains("include_reused=1 include_unread=1"), "{line}");
    assert!(
        line.contains("names_kept=true names_patched=false ads_compiled=1"),
        "{line}"
    );
    assert_eq!(answer(&s, "b"), ["192.0.2.1"], "the rewritten file serves");
    assert_eq!(answer(&s, "a"), ["192.0.2.1"]);

    // A new name: the name tables are patched, and only its row is compiled (appended
    // after the others; `b` keeps its own).
    dir.write(
        "ads/b.toml",
        &format!("{}{}", ad_file("b", "p1"), ad_file("c", "p2")),
    );
    let line = reload(&s, 4);
    assert!(
        line.contains("names_kept=false names_patched=true ads_compiled=1"),
        "{line}"
    );
    assert_eq!(answer(&s, "c"), ["192.0.2.2"]);
    // Compiled on small pages, the tables then go back on huge pages, where the kernel
    // can collapse memory (the server says so when it starts).
    if s.wait_log(" ready", Duration::from_secs(1))
        .contains("small, collapsed after")
    {
        s.wait_log(
            "tables back on huge pages generation=4 ",
            Duration::from_secs(20),
        );
    }

    // `a` again in the changed file, beside the kept one.
    dir.write(
        "ads/b.toml",
        &format!("{}{}", ad_file("b", "p1"), ad_file("a", "p2")),
    );
    s.signal(libc::SIGHUP);
    s.wait_log(
        "access domain a.i.test. A is declared twice",
        Duration::from_secs(10),
    );
    assert_eq!(answer(&s, "a"), ["192.0.2.1"], "the old model serves");
    assert_eq!(answer(&s, "c"), ["192.0.2.2"]);
    dir.write("ads/b.toml", &ad_file("b", "p2"));
    let line = reload(&s, 5);
    assert!(
        line.contains("names_kept=false names_patched=true"),
        "{line}"
    );
    assert_eq!(answer(&s, "b"), ["192.0.2.2"]);
    let rcode = |name: &str| s.udp(&Q::new(name, A).build()).expect("an answer").rcode();
    assert_eq!(rcode("c.i.test"), 3, "a name patched out is gone");

    // A name below one that does not exist: its parent becomes an empty non-terminal,
    // which the zones are compiled again for; and patched out again when it goes.
    dir.write(
        "ads/b.toml",
        &format!("{}{}", ad_file("b", "p2"), ad_file("x.y", "p1")),
    );
    let line = reload(&s, 6);
    assert!(
        line.contains("names_kept=false names_patched=false"),
        "{line}"
    );
    assert_eq!(answer(&s, "x.y"), ["192.0.2.1"]);
    let ent = s.udp(&Q::new("y.i.test", A).build()).expect("an answer");
    assert_eq!(
        (ent.rcode(), ent.answers(A).len()),
        (0, 0),
        "NODATA at the ENT"
    );
    dir.write("ads/b.toml", &ad_file("b", "p2"));
    let line = reload(&s, 7);
    assert!(
        line.contains("names_kept=false names_patched=false"),
        "{line}"
    );
    assert_eq!((rcode("x.y.i.test"), rcode("y.i.test")), (3, 3));
}

/// A line's prefix file is taken from the last load while its stamp vouches for it, and
/// read again when it changes, even to the same length with its old mtime put back.
#[test]
fn prefix_files_are_read_again_when_they_change() {
    let dir = TempDir::new("includes-lines");
    let main = main_file(false).replacen(
        "[[address]]",
        "[[line]]\nname = \"lab\"\nfile = \"lab.txt\"\n[[address]]",
        1,
    );
    let cfg = dir.write("main.toml", &main);
    std::fs::create_dir_all(dir.join("ads")).unwrap();
    dir.write(
        "ads/a.toml",
        "[[access-domain]]\nname = \"a.i.test.\"\ntype = \"A\"\npolicy = \"nearest\"\n\
         [access-domain.lines]\ndefault = [\"p1\"]\nlab = [\"p2\"]\n",
    );
    let lab = dir.write("lab.txt", "198.51.100.0/24\n");
    std::thread::sleep(Duration::from_millis(2300));
    let s = Server::start(&["--config", cfg.to_str().unwrap()]);
    let from = |net: [u8; 3]| {
        let q = Q::new("a.i.test", A).edns(1232).ecs(1, 24, 0, &net).build();
        s.udp(&q).expect("an answer").answers(A)
    };
    assert_eq!(from([198, 51, 100]), ["192.0.2.2"], "the lab line");
    assert_eq!(from([203, 0, 113]), ["192.0.2.1"], "default");
    reload(&s, 2);
    assert_eq!(from([198, 51, 100]), ["192.0.2.2"], "kept across a reload");

    // Same length, old mtime put back.
    let mtime = std::fs::metadata(&lab).unwrap().modified().unwrap();
    dir.write("lab.txt", "203.0.113.0/24\n");
    let f = std::fs::File::options().write(true).open(&lab).unwrap();
    f.set_modified(mtime).unwrap();
    drop(f);
    reload(&s, 3);
    assert_eq!(from([203, 0, 113]), ["192.0.2.2"], "the new prefix");
    assert_eq!(
        from([198, 51, 100]),
        ["192.0.2.1"],
        "the old prefix is default's"
    );
}

/// A file taken twice (by a pattern and by its name) declares its access domains twice:
/// the reload is refused, as a restart would refuse it, though the file is unchanged.
#[test]
fn a_file_included_twice_is_refused_on_reload() {
    let dir = TempDir::new("includes-twice");
    let cfg = dir.write("main.toml", &main_file(false));
    std::fs::create_dir_all(dir.join("ads")).unwrap();
    dir.write("ads/a.toml", &ad_file("a", "p1"));
    let s = Server::start(&["--config", cfg.to_str().unwrap()]);
    reload(&s, 2);
    let twice = main_file(false).replace(
        "include = [\"ads/*.toml\"]",
        "include = [\"ads/*.toml\", \"ads/a.toml\"]",
    );
    dir.write("main.toml", &twice);
    s.signal(libc::SIGHUP);
    s.wait_log(
        "access domain a.i.test. A is declared twice",
        Duration::from_secs(10),
    );
    assert_eq!(answer(&s, "a"), ["192.0.2.1"], "the old model serves");
}

/// A reload refused by the compiler (an access domain below a delegation) leaves the
/// serving snapshot as it was for the next reload, which is still incremental.
#[test]
fn a_reload_refused_by_the_compiler_leaves_the_next_one_incremental() {
    let dir = TempDir::new("includes-refused");
    let cfg = dir.write("main.toml", &main_file(false));
    std::fs::create_dir_all(dir.join("ads")).unwrap();
    dir.write("ads/a.toml", &ad_file("a", "p1"));
    dir.write("ads/b.toml", &ad_file("b", "p2"));
    let s = Server::start(&["--config", cfg.to_str().unwrap()]);
    let cut = main_file(false).replace(
        "records = [\"ns A 192.0.2.53\"]",
        "records = [\"ns A 192.0.2.53\", \"x NS ns.elsewhere.test.\"]",
    );
    dir.write("main.toml", &cut);
    dir.write(
        "ads/b.toml",
        &format!("{}{}", ad_file("b", "p2"), ad_file("y.x", "p1")),
    );
    s.signal(libc::SIGHUP);
    s.wait_log("lies below the delegation", Duration::from_secs(10));
    dir.write("main.toml", &main_file(false));
    dir.write("ads/b.toml", &ad_file("b", "p1"));
    let line = reload(&s, 2);
    assert!(
        line.contains("names_kept=true names_patched=false ads_compiled=1"),
        "{line}"
    );
    assert_eq!(answer(&s, "b"), ["192.0.2.1"]);
}

/// A server that answers no query still lets go of the tables a reload replaced: its
/// shards drop them within their wait bound, and the retire thread frees them at once
/// rather than after its ten-second bound, with no shard still holding them (an idle
/// server would otherwise keep two configurations in memory until its next query).
#[test]
fn idle_shards_let_go_of_replaced_tables() {
    let dir = TempDir::new("includes-idle");
    let cfg = dir.write("main.toml", &main_file(false));
    std::fs::create_dir_all(dir.join("ads")).unwrap();
    dir.write("ads/a.toml", &ad_file("a", "p1"));
    let env = [("RUST_LOG", "info,gtmd::control=debug")];
    let s = Server::start_env(&["--config", cfg.to_str().unwrap()], &env);
    for g in 2..=3 {
        dir.write(
            "ads/a.toml",
            &ad_file("a", if g == 2 { "p2" } else { "p1" }),
        );
        reload(&s, g);
        let line = s.wait_log(
            &format!("reload: previous configuration retired generation={g}"),
            Duration::from_secs(3),
        );
        assert!(line.contains("still_held=false"), "{line}");
    }
}

/// A line added before the others (the usual edit to lines) is placed after them: every
/// access domain keeps its lines' indices, so both included files are shared and the
/// tables compile in place, and askers from the new line are answered from its parent's
/// route, or from its own once a file maps it. A line removed moves the ones after it:
/// every file is validated again.
#[test]
fn a_line_added_first_keeps_every_file_and_answers_from_its_parent() {
    let dir = TempDir::new("includes-lines");
    let main = |first: Option<&str>| {
        let line = |n: &str, net: u8, parent: &str| {
            format!("[[line]]\nname = \"{n}\"\nprefixes = [\"10.{net}.0.0/16\"]\n{parent}")
        };
        let mut t = main_file(false);
        if let Some(parent) = first {
            t += &line("new", 9, &format!("parent = \"{parent}\"\n"));
        }
        t += &line("l1", 1, "");
        t += &line("l2", 2, "parent = \"l1\"\n");
        t
    };
    let nearest = |name: &str, l1: &str, extra: &str| {
        format!(
            "[[access-domain]]\nname = \"{name}.i.test.\"\ntype = \"A\"\npolicy = \"nearest\"\n\
             [access-domain.lines]\ndefault = [\"p2\"]\nl1 = [\"{l1}\"]\n{extra}"
        )
    };
    let cfg = dir.write("main.toml", &main(None));
    std::fs::create_dir_all(dir.join("ads")).unwrap();
    dir.write("ads/a.toml", &nearest("a", "p1", ""));
    dir.write("ads/b.toml", &nearest("b", "p1", ""));
    let s = Server::start(&["--config", cfg.to_str().unwrap()]);
    let from = |name: &str, net: u8| {
        let q = Q::new(&format!("{name}.i.test"), A)
            .edns(1232)
            .ecs(1, 24, 0, &[10, net, 0]);
        s.udp(&q.build()).expect("an answer").answers(A)
    };
    assert_eq!(
        from("a", 2),
        ["192.0.2.1"],
        "l2 takes its parent l1's route"
    );
    assert_eq!(from("a", 9), ["192.0.2.2"], "10.9/16 is in no line yet");

    dir.write("main.toml", &main(Some("l1")));
    let line = reload(&s, 2);
    assert!(line.contains("include_files=2 include_reused=2"), "{line}");
    assert!(line.contains("ads_compiled=0"), "{line}");
    assert_eq!(
        from("a", 9),
        ["192.0.2.1"],
        "the new line answers as its parent"
    );
    assert_eq!(from("b", 9), ["192.0.2.1"]);
    assert_eq!(from("b", 3), ["192.0.2.2"], "no line: default");

    // A file maps the new line: it alone is compiled again.
    dir.write("ads/b.toml", &nearest("b", "p1", "new = [\"p2\"]\n"));
    let line = reload(&s, 3);
    assert!(line.contains("include_files=2 include_reused=1"), "{line}");
    assert_eq!(from("b", 9), ["192.0.2.2"], "its own route");
    assert_eq!(from("a", 9), ["192.0.2.1"]);

    // Reparented under l2 (whose route is l1's in `a`): the same answers, and nothing
    // compiled (the line -> route rows are laid out again for the new parent).
    dir.write("main.toml", &main(Some("l2")));
    let line = reload(&s, 4);
    assert!(line.contains("include_reused=2"), "{line}");
    assert!(line.contains("ads_compiled=0"), "{line}");
    assert_eq!(
        (from("a", 9), from("b", 9)),
        (vec!["192.0.2.1".to_string()], vec!["192.0.2.2".to_string()])
    );

    // Both files map only `default` and `new`; then l1 is removed, which moves l2 and
    // the new line: every file is validated again, and answers follow.
    let plain = |name: &str| {
        format!(
            "[[access-domain]]\nname = \"{name}.i.test.\"\ntype = \"A\"\npolicy = \"nearest\"\n\
             [access-domain.lines]\ndefault = [\"p2\"]\nnew = [\"p1\"]\n"
        )
    };
    dir.write("ads/a.toml", &plain("a"));
    dir.write("ads/b.toml", &plain("b"));
    reload(&s, 5);
    assert_eq!(from("a", 1), ["192.0.2.2"], "l1 is no route of `a` now");
    let without_l1 = main(Some("l2"))
        .replace(
            "[[line]]\nname = \"l1\"\nprefixes = [\"10.1.0.0/16\"]\n",
            "",
        )
        .replace("parent = \"l1\"\n", "");
    dir.write("main.toml", &without_l1);
    let line = reload(&s, 6);
    assert!(line.contains("include_files=2 include_reused=0"), "{line}");
    assert_eq!(
        from("b", 9),
        ["192.0.2.1"],
        "the new line, moved, still answers"
    );
    assert_eq!(from("a", 2), ["192.0.2.2"]);
}

/// A name added to the first of three files goes after every other access domain: only
/// its row is compiled, none moves. Edits after it, to the split file and to the new
/// name, are compiled in place too; a name removed leaves its place to the last one, and
/// answers stay those of the files at every step.
#[test]
fn a_name_added_to_an_early_file_moves_no_other() {
    let dir = TempDir::new("includes-layout");
    let cfg = dir.write("main.toml", &main_file(false));
    std::fs::create_dir_all(dir.join("ads")).unwrap();
    let file =
        |names: &[(&str, &str)]| names.iter().map(|(n, p)| ad_file(n, p)).collect::<String>();
    dir.write("ads/a.toml", &file(&[("a1", "p1"), ("a2", "p1")]));
    dir.write("ads/b.toml", &file(&[("b1", "p2")]));
    dir.write("ads/c.toml", &file(&[("c1", "p2")]));
    let s = Server::start(&["--config", cfg.to_str().unwrap()]);
    // Each name's answers, by the last octet: "2 1" for 192.0.2.2 then 192.0.2.1.
    let all = |s: &Server, names: &[&str]| -> String {
        let last = |n: &&str| answer(s, n).join(",").replace("192.0.2.", "");
        names.iter().map(last).collect::<Vec<_>>().join(" ")
    };

    dir.write(
        "ads/a.toml",
        &file(&[("a0", "p2"), ("a1", "p1"), ("a2", "p1")]),
    );
    let line = reload(&s, 2);
    assert!(line.contains("include_reused=2"), "{line}");
    assert!(line.contains("ads_compiled=1"), "only the new one: {line}");
    assert_eq!(all(&s, &["a0", "a1", "a2", "b1", "c1"]), "2 1 1 2 2");

    // The split file edited: a1 moves to p2, in its place.
    dir.write(
        "ads/a.toml",
        &file(&[("a0", "p2"), ("a1", "p2"), ("a2", "p1")]),
    );
    let line = reload(&s, 3);
    assert!(line.contains("ads_compiled=1"), "{line}");
    assert_eq!(all(&s, &["a0", "a1", "a2"]), "2 2 1");

    // The new name edited, and one more added in the middle of another file.
    dir.write(
        "ads/a.toml",
        &file(&[("a0", "p1"), ("a1", "p2"), ("a2", "p1")]),
    );
    dir.write("ads/b.toml", &file(&[("b0", "p1"), ("b1", "p2")]));
    let line = reload(&s, 4);
    assert!(line.contains("ads_compiled=2"), "{line}");
    assert_eq!(
        all(&s, &["a0", "a1", "a2", "b0", "b1", "c1"]),
        "1 2 1 1 2 2"
    );

    // A name removed: the last access domain (as many routes) takes its place, and is
    // the only one compiled; the answers follow the files.
    dir.write("ads/a.toml", &file(&[("a0", "p1"), ("a2", "p2")]));
    let line = reload(&s, 5);
    assert!(line.contains("include_reused=2"), "{line}");
    assert!(
        line.contains("ads_compiled=2"),
        "a2 edited, and the one moved: {line}"
    );
    assert_eq!(all(&s, &["a0", "a2", "b0", "b1", "c1"]), "1 2 1 2 2");
    assert_eq!(
        s.udp(&Q::new("a1.i.test", A).build())
            .expect("an answer")
            .rcode(),
        3,
        "a1 is gone"
    );
}

/// Access domains given new candidate lists again and again: the lists no row names any
/// more pile up until the reload that reclaims them in place (the server says
/// `lists_compacted=true`), and every answer follows the file at every step. A reload
/// refused after its compile (a zone that does not compile) drops the compiler's list
/// index; the next one reads it back from the tables and compiles only what changed.
#[test]
fn lists_left_behind_by_edits_are_reclaimed_and_answers_follow_the_files() {
    const POOLS: u32 = 64;
    // Enough lists that the compiler's index (over 100,000 entries) is handed on, not
    // copied, so the refused reload below takes it.
    const ADS: u32 = 4500;
    let dir = TempDir::new("includes-compact");
    let mut main = String::from(
        "version = 1\ninclude = [\"ads.toml\"]\n[server]\nshards = [0]\n[control]\nlisten = \"off\"\n\
         [[zone]]\nname = \"i.test.\"\nsoa = { mname = \"ns\", rname = \"h\" }\nns = [\"ns\"]\n\
         records = [\"ns A 192.0.2.253\"]\n",
    );
    for p in 0..POOLS {
        main += &format!(
            "[[address]]\nname = \"x{p}\"\nvalue = \"192.0.2.{}\"\n[[pool]]\nname = \"p{p}\"\n\
             type = \"ipv4\"\naddresses = [\"x{p}\"]\n",
            p + 1
        );
    }
    for l in 0..8 {
        main += &format!("[[line]]\nname = \"l{l}\"\nprefixes = [\"10.{l}.0.0/16\"]\n");
    }
    let cfg = dir.write("main.toml", &main);
    let good_main = main.clone();
    // Each access domain's line lists (3 distinct pools each) for a seed; the first pool
    // answers (every address is up).
    let lists = |seed: u64| -> Vec<[[u32; 3]; 8]> {
        let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x % u64::from(POOLS)) as u32
        };
        (0..ADS)
            .map(|_| {
                [(); 8].map(|_| {
                    let a = next();
                    let b = (a + 1 + next() % (POOLS - 1)) % POOLS;
                    let c = (0..).map(|_| next()).find(|&c| c != a && c != b).unwrap();
                    [a, b, c]
                })
            })
            .collect()
    };
    let write = |l: &[[[u32; 3]; 8]]| {
        let mut t = String::new();
        for (i, ad) in l.iter().enumerate() {
            t += &format!(
                "[[access-domain]]\nname = \"a{i}.i.test.\"\ntype = \"A\"\npolicy = \"nearest\"\n\
                 [access-domain.lines]\ndefault = [\"p0\"]\n"
            );
            for (li, p) in ad.iter().enumerate() {
                t += &format!("l{li} = [\"p{}\", \"p{}\", \"p{}\"]\n", p[0], p[1], p[2]);
            }
        }
        dir.write("ads.toml", &t);
    };
    let check = |s: &Server, l: &[[[u32; 3]; 8]], step: u64| {
        for i in (0..ADS as usize).step_by(97) {
            let line = (i + step as usize) % 8;
            let q =
                Q::new(&format!("a{i}.i.test"), A)
                    .edns(1232)
                    .ecs(1, 24, 0, &[10, line as u8, 0]);
            let got = s.udp(&q.build()).expect("an answer").answers(A);
            let want = format!("192.0.2.{}", l[i][line][0] + 1);
            assert_eq!(got, [want], "step {step}: a{i} from l{line}");
        }
    };
    write(&lists(1));
    let s = Server::start(&["--config", cfg.to_str().unwrap()]);
    check(&s, &lists(1), 1);
    let mut compacted = Vec::new();
    for step in 2..=5 {
        let l = lists(step);
        write(&l);
        let said = reload(&s, step as u32);
        assert!(said.contains("ads_compiled=4500"), "{said}");
        if said.contains("lists_compacted=true") {
            compacted.push(step);
        }
        check(&s, &l, step);
    }
    // Each edit adds ~96k entries of new lists: past twice the 96k of the start (and the
    // slack of 65,536), at the third, the second's lists are dead and the third's move
    // into their places.
    assert!(compacted.contains(&3), "compacted at {compacted:?}");

    // An NS at a wildcard is refused by the zone compiler, which runs beside the GSLB
    // compile: that compile took the index.
    let bad = good_main.replace(
        "records = [\"ns A 192.0.2.253\"]",
        "records = [\"ns A 192.0.2.253\", \"*.w NS ns\"]",
    );
    assert_ne!(bad, good_main);
    dir.write("main.toml", &bad);
    s.signal(libc::SIGHUP);
    s.wait_log("reload rejected: still serving", Duration::from_secs(10));
    dir.write("main.toml", &good_main);
    let mut l = lists(5);
    l[7][0] = [9, 10, 11];
    write(&l);
    let said = reload(&s, 6);
    assert!(
        said.contains("ads_compiled=1 "),
        "read back, not compiled in full: {said}"
    );
    check(&s, &l, 6);
    let q = Q::new("a7.i.test", A).edns(1232).ecs(1, 24, 0, &[10, 0, 0]);
    assert_eq!(
        s.udp(&q.build()).expect("an answer").answers(A),
        ["192.0.2.10"]
    );
}
