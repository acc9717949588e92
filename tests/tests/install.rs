//! Black-box tests of `make install`: into a temporary `DESTDIR` with
//! `PREFIX=/usr`, then used as a packager and a C programmer would use it.
//!
//!     cargo test -p libipc-tests --test install
//!
//! Needs make, pkg-config, a C compiler and groff (tests/run installs them). The
//! Makefile does not build here (`BUILD=no`): it installs what the other black-box
//! tests use, the daemons of [`libipc_tests::build_binaries`] and the
//! `libipc.so`/`.a` cargo built for this test, so the test costs no release build.
//! The C programs are compiled with nothing but what `pkg-config` says for the
//! installed `libipc.pc` (`PKG_CONFIG_LIBDIR` and `PKG_CONFIG_SYSROOT_DIR` pointing
//! into the `DESTDIR`) and the installed header and libraries.

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use libipc_tests::{
    CHILD_TIMEOUT, Run, World, artifacts, assert_pongd_done, echoes, run_cmd, workspace,
};

const DAEMONS: [&str; 3] = ["tcpd", "tlsd", "websocketd"];

/// `make TARGET BUILD=no VARS...`, installing the already built artifacts:
/// `make` is `Command::new("make")`, or a command that runs make.
fn make_command(mut make: Command, target: &str, vars: &[String]) -> Command {
    let a = artifacts();
    make.current_dir(workspace())
        .args(["--no-print-directory", target, "BUILD=no"])
        .args(vars)
        .arg(format!("BUILT_BINS={}", a.bins.display()))
        .arg(format!("BUILT_LIBS={}", a.libdir.display()));
    make
}

/// `make install` (or another target) with `PREFIX=/usr DESTDIR=<world>/dest`,
/// as a packager does; returns `<world>/dest`.
fn make(w: &World, target: &str) -> PathBuf {
    let dest = w.path().join("dest");
    let vars = [
        "PREFIX=/usr".to_owned(),
        format!("DESTDIR={}", dest.display()),
    ];
    let cmd = make_command(Command::new("make"), target, &vars);
    run_cmd(cmd, w.path(), &format!("make-{target}"), CHILD_TIMEOUT)
        .assert_success(&format!("make {target}"));
    dest
}

/// Every file (not directory) under `dir`, relative to it, sorted.
fn files(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for entry in fs::read_dir(&d).unwrap_or_else(|e| panic!("{}: {e}", d.display())) {
            let path = entry.unwrap().path();
            if path.is_dir() {
                todo.push(path);
            } else {
                let rel = path.strip_prefix(dir).unwrap();
                out.push(rel.to_string_lossy().into_owned());
            }
        }
    }
    out.sort();
    out
}

/// What `pkg-config ARGS libipc` says of the libipc.pc installed in
/// `dest/usr` (its paths inside `dest`, through `PKG_CONFIG_SYSROOT_DIR`),
/// split into words.
fn pkg_config(w: &World, dest: &Path, args: &[&str]) -> Vec<String> {
    let mut cmd = Command::new("pkg-config");
    cmd.env("PKG_CONFIG_SYSROOT_DIR", dest);
    pkg_config_in(w, cmd, &dest.join("usr/lib/pkgconfig"), args)
}

/// What `pkg-config ARGS libipc`, run by `cmd`, says of the libipc.pc in
/// `pcdir`, split into words.
fn pkg_config_in(w: &World, mut cmd: Command, pcdir: &Path, args: &[&str]) -> Vec<String> {
    cmd.args(args)
        .arg("libipc")
        // LIBDIR, not PATH: only the installed .pc, none of the machine's.
        .env("PKG_CONFIG_LIBDIR", pcdir);
    let run = run_cmd(
        cmd,
        w.path(),
        &format!("pkg-config{}", args.concat()),
        CHILD_TIMEOUT,
    );
    run.assert_success(&format!("pkg-config {}", args.join(" ")));
    run.stdout.split_whitespace().map(str::to_owned).collect()
}

/// Compiles `tests/c/<prog>.c` with the installed header, `flags` (from
/// pkg-config) and `extra`, into `<world>/<exe>`.
fn cc(w: &World, prog: &str, exe: &str, flags: &[String], extra: &[&str]) -> PathBuf {
    let out = w.path().join(exe);
    let mut cmd = Command::new("cc");
    cmd.args(["-std=c99", "-Wall", "-Wextra", "-Werror"])
        .arg(workspace().join("tests/c").join(format!("{prog}.c")))
        .args(flags)
        .args(extra)
        .arg("-o")
        .arg(&out);
    run_cmd(cmd, w.path(), &format!("cc-{exe}"), CHILD_TIMEOUT).assert_success(&format!(
        "compiling tests/c/{prog}.c against the installed libipc"
    ));
    out
}

/// `--help` of the installed daemon `name`, and the long flags it lists.
fn help_flags(w: &World, usr: &Path, name: &str) -> (Run, Vec<String>) {
    let mut cmd = Command::new(usr.join("bin").join(name));
    cmd.arg("--help");
    let run = run_cmd(cmd, w.path(), &format!("{name}-help"), CHILD_TIMEOUT);
    run.assert_success("--help");
    let mut flags: Vec<String> = run
        .stdout
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '-'))
        .filter(|word| word.starts_with("--") && word.len() > 2)
        .map(str::to_owned)
        .collect();
    flags.sort();
    flags.dedup();
    assert!(
        flags.len() > 10,
        "too few flags in --help\n{}",
        run.report()
    );
    (run, flags)
}

#[test]
fn make_install_lays_out_everything_and_uninstall_removes_it() {
    let w = World::new();
    let dest = make(&w, "install");
    let usr = dest.join("usr");
    let installed = files(&dest);

    let mut want = vec![
        "usr/include/libipc.h".to_owned(),
        "usr/lib/libipc.a".to_owned(),
        "usr/lib/libipc.so".to_owned(),
        "usr/lib/pkgconfig/libipc.pc".to_owned(),
    ];
    for d in DAEMONS {
        want.extend([
            format!("usr/bin/{d}"),
            format!("usr/share/man/man1/{d}.1"),
            format!("usr/share/bash-completion/completions/{d}"),
            format!("usr/share/zsh/site-functions/_{d}"),
            format!("usr/share/fish/vendor_completions.d/{d}.fish"),
        ]);
    }
    // Whatever systemd/ holds (units, sysusers.d and tmpfiles.d entries, the
    // settings the units read).
    let systemd = workspace().join("systemd");
    let mut settings = Vec::new();
    for f in fs::read_dir(&systemd).into_iter().flatten().flatten() {
        let name = f.file_name().to_string_lossy().into_owned();
        let (stem, ext) = name.rsplit_once('.').unwrap_or((&name, ""));
        match ext {
            "service" | "socket" | "target" | "timer" => {
                want.push(format!("usr/lib/systemd/system/{name}"))
            }
            "env" => settings.push(format!("etc/libipc/{name}")),
            "sysusers" => want.push(format!("usr/lib/sysusers.d/{stem}.conf")),
            "tmpfiles" => want.push(format!("usr/lib/tmpfiles.d/{stem}.conf")),
            _ => {}
        }
    }
    for sub in ["sysusers.d", "tmpfiles.d"] {
        for f in fs::read_dir(systemd.join(sub))
            .into_iter()
            .flatten()
            .flatten()
        {
            let name = f.file_name().to_string_lossy().into_owned();
            if name.ends_with(".conf") {
                want.push(format!("usr/lib/{sub}/{name}"));
            }
        }
    }
    for f in fs::read_dir(workspace().join("websocketd/www"))
        .into_iter()
        .flatten()
        .flatten()
    {
        let name = f.file_name().to_string_lossy().into_owned();
        want.push(format!("usr/share/libipc/www/{name}"));
    }
    want.extend(settings.iter().cloned());
    want.sort();
    assert_eq!(installed, want, "installed files");

    // Modes: programs and the shared library executable, the rest not.
    for f in &installed {
        let mode = fs::metadata(dest.join(f)).unwrap().permissions().mode() & 0o777;
        let exec = f.starts_with("usr/bin/") || f.ends_with(".so");
        assert_eq!(mode, if exec { 0o755 } else { 0o644 }, "mode of {f}");
    }
    // The installed binaries are the daemons, and run.
    for d in DAEMONS {
        let mut cmd = Command::new(usr.join("bin").join(d));
        cmd.arg("--version");
        let run = run_cmd(cmd, w.path(), &format!("{d}-version"), CHILD_TIMEOUT);
        run.assert_success("--version");
        assert!(run.stdout.starts_with(&format!("{d} ")), "{}", run.report());
    }
    // Same bytes as what the Makefile was told to install.
    let same = |a: &Path, b: &Path| fs::read(a).unwrap() == fs::read(b).unwrap();
    assert!(same(
        &usr.join("lib/libipc.so"),
        &artifacts().libdir.join("libipc.so")
    ));
    assert!(same(
        &usr.join("include/libipc.h"),
        &workspace().join("libipc-c/include/libipc.h")
    ));

    let pc = fs::read_to_string(usr.join("lib/pkgconfig/libipc.pc")).unwrap();
    for line in [
        "prefix=/usr",
        "libdir=${prefix}/lib",
        "includedir=${prefix}/include",
        "Libs: -L${libdir} -lipc",
        "Cflags: -I${includedir}",
    ] {
        assert!(
            pc.lines().any(|l| l == line),
            "libipc.pc lacks {line:?}:\n{pc}"
        );
    }

    // Units that start a daemon start the installed one.
    let unitdir = usr.join("lib/systemd/system");
    for f in fs::read_dir(&unitdir).into_iter().flatten().flatten() {
        let text = fs::read_to_string(f.path()).unwrap();
        for d in DAEMONS {
            let elsewhere = format!("/usr/local/bin/{d}");
            assert!(!text.contains(&elsewhere), "{:?}: {elsewhere}", f.path());
        }
        for line in text.lines().filter(|l| l.starts_with("ExecStart=")) {
            if let Some(d) = DAEMONS.iter().find(|d| line.contains(&format!("/{d}"))) {
                let program = line["ExecStart=".len()..].split_whitespace().next();
                let want = format!("/usr/bin/{d}");
                assert_eq!(program, Some(want.as_str()), "{line:?}");
            }
        }
    }

    // make uninstall removes every file install put there.
    make(&w, "uninstall");
    assert_eq!(files(&dest), Vec::<String>::new(), "left by make uninstall");

    // Settings someone edited survive a new install, and the uninstall.
    if !settings.is_empty() {
        make(&w, "install");
        for f in &settings {
            fs::write(dest.join(f), "# edited\n").unwrap();
        }
        make(&w, "install");
        make(&w, "uninstall");
        settings.sort();
        assert_eq!(files(&dest), settings, "left by make uninstall");
        for f in &settings {
            let text = fs::read_to_string(dest.join(f)).unwrap();
            assert_eq!(text, "# edited\n", "{f}");
        }
    }
}

#[test]
fn man_pages_render_and_they_and_the_completions_cover_every_flag() {
    let w = World::new();
    let dest = make(&w, "install");
    let usr = dest.join("usr");
    for d in DAEMONS {
        let (help, flags) = help_flags(&w, &usr, d);

        // Rendered by groff with every warning on (-ww): none may come out.
        let page = usr.join(format!("share/man/man1/{d}.1"));
        let roff = fs::read_to_string(&page).unwrap();
        assert!(
            roff.contains(&format!(".TH {d} 1 ")),
            "{d}.1 header:\n{roff}"
        );
        let mut cmd = Command::new("groff");
        cmd.args(["-man", "-Tascii", "-P-cbou", "-ww", "-rLL=400n"])
            .arg(&page);
        let man = run_cmd(cmd, w.path(), &format!("groff-{d}"), CHILD_TIMEOUT);
        man.assert_success(&format!("groff -man {d}.1"));
        assert_eq!(man.stderr, "", "groff warnings\n{}", man.report());
        assert!(man.stdout.contains("NAME"), "{}", man.report());
        for flag in &flags {
            assert!(
                man.stdout.contains(flag.as_str()),
                "{d}.1 lacks {flag}\n{}\n{}",
                help.report(),
                man.stdout
            );
        }
        // The packaging flag stays out of the documentation.
        assert!(!man.stdout.contains("--generate-docs"), "{}", man.stdout);

        let comp = |rel: &str| fs::read_to_string(usr.join(rel)).unwrap();
        let bash = comp(&format!("share/bash-completion/completions/{d}"));
        let zsh = comp(&format!("share/zsh/site-functions/_{d}"));
        let fish = comp(&format!("share/fish/vendor_completions.d/{d}.fish"));
        assert!(zsh.starts_with(&format!("#compdef {d}")), "_{d}:\n{zsh}");
        for flag in &flags {
            let fish_flag = format!("-l {}", &flag[2..]);
            assert!(bash.contains(flag.as_str()), "bash completion lacks {flag}");
            assert!(zsh.contains(flag.as_str()), "zsh completion lacks {flag}");
            assert!(fish.contains(&fish_flag), "fish completion lacks {flag}");
        }
        for text in [&bash, &zsh, &fish] {
            assert!(!text.contains("generate-docs"));
        }
        // The bash one at least parses.
        let mut cmd = Command::new("bash");
        cmd.arg("-n")
            .arg(usr.join(format!("share/bash-completion/completions/{d}")));
        run_cmd(cmd, w.path(), &format!("bash-n-{d}"), CHILD_TIMEOUT)
            .assert_success("bash -n on the completion");
    }
}

#[test]
fn c_programs_build_with_pkg_config_against_the_installed_library() {
    let w = World::new();
    let dest = make(&w, "install");
    let libdir = dest.join("usr/lib");

    let cflags = pkg_config(&w, &dest, &["--cflags"]);
    let libs = pkg_config(&w, &dest, &["--libs"]);
    let include = format!("-I{}", dest.join("usr/include").display());
    assert_eq!(cflags, [include]);
    assert_eq!(libs, [format!("-L{}", libdir.display()), "-lipc".into()]);

    // Dynamic: C pong, with only the installed libipc.so to load, against the
    // Rust pongd.
    let flags: Vec<String> = cflags.iter().chain(&libs).cloned().collect();
    let pong = cc(&w, "pong", "pong", &flags, &[]);
    let mut cmd = w.example("pongd");
    cmd.arg("pong");
    let mut rust_pongd = w.start_service(cmd, "pong", "rust-pongd");
    let mut cmd = w.command(&pong);
    cmd.env("LD_LIBRARY_PATH", &libdir)
        .args(["pong", "installed", "3"]);
    let run = run_cmd(cmd, w.path(), "pong", CHILD_TIMEOUT);
    run.assert_success("C pong linked with the installed libipc.so");
    assert_eq!(run.stdout, echoes("installed", 3), "{}", run.report());
    assert!(rust_pongd.running(), "{}", rust_pongd.output(None).report());
    drop(rust_pongd);

    // Static: `pkg-config --static` and `cc -static` (with libipc.so next to
    // libipc.a, -lipc takes the shared one without -static). C pongd, run with no
    // LD_LIBRARY_PATH (where the loader could not find libipc.so), serves the Rust
    // pong.
    let static_libs = pkg_config(&w, &dest, &["--static", "--libs"]);
    let flags: Vec<String> = cflags.iter().chain(&static_libs).cloned().collect();
    let pongd = cc(&w, "pongd", "pongd-static", &flags, &["-static"]);
    let mut cmd = w.command(&pongd);
    cmd.env_remove("LD_LIBRARY_PATH").args(["spong", "2"]); // 1 client, 1 probe
    let service = w.start_service(cmd, "spong", "pongd-static");
    let mut cmd = w.example("pong");
    cmd.args(["-s", "spong", "static", "", "again"]);
    let run = run_cmd(cmd, w.path(), "rust-pong", CHILD_TIMEOUT);
    run.assert_success("Rust pong against the static C pongd");
    assert_eq!(run.stdout, "static\n\nagain\n", "{}", run.report());
    assert_pongd_done(service, 1);
}

#[test]
fn trial_install_under_a_home_prefix_stays_there_and_its_programs_run() {
    let w = World::new();
    let prefix = w.path().join("x");
    fs::create_dir(&prefix).unwrap();
    // As root, make runs as nobody, owner of PREFIX only: a write anywhere
    // else in the system (/etc/libipc, ldconfig's cache) fails the install.
    let root = fs::metadata("/proc/self").map(|m| m.uid()).ok() == Some(0);
    let make = if root {
        fs::set_permissions(w.path(), fs::Permissions::from_mode(0o755)).unwrap();
        std::os::unix::fs::chown(&prefix, Some(65534), None).unwrap();
        let mut cmd = Command::new("setpriv");
        cmd.args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--",
            "make",
        ]);
        cmd
    } else {
        Command::new("make")
    };
    let vars = [format!("PREFIX={}", prefix.display())];
    let cmd = make_command(make, "install", &vars);
    let run = run_cmd(cmd, w.path(), "make-install", CHILD_TIMEOUT);
    run.assert_success("make install PREFIX=<temp dir>");
    let libdir = prefix.join("lib");
    assert!(!run.stdout.contains("ldconfig"), "{}", run.report());
    // How to use what is not in the system's paths.
    let hint = format!("LD_LIBRARY_PATH={}", libdir.display());
    assert!(run.stdout.contains(&hint), "{}", run.report());

    // The settings under PREFIX, and the units read them there.
    let env = prefix.join("etc/libipc/libipc.env");
    assert!(env.is_file(), "{} missing\n{}", env.display(), run.report());
    let unit = fs::read_to_string(prefix.join("lib/systemd/system/tcpd.service")).unwrap();
    let want = format!("EnvironmentFile=-{}", env.display());
    assert!(unit.lines().any(|l| l == want), "tcpd.service:\n{unit}");

    // A C program built with pkg-config's flags (found as the make output
    // says) runs with no LD_LIBRARY_PATH: it finds the installed libipc.so.
    let pcdir = prefix.join("lib/pkgconfig");
    let flags = pkg_config_in(
        &w,
        Command::new("pkg-config"),
        &pcdir,
        &["--cflags", "--libs"],
    );
    let pong = cc(&w, "pong", "pong", &flags, &[]);
    let pongd = w.rust_pongd("pong");
    let mut cmd = w.command(&pong);
    cmd.env_remove("LD_LIBRARY_PATH")
        .args(["pong", "trial", "2"]);
    let run = run_cmd(cmd, w.path(), "pong", CHILD_TIMEOUT);
    run.assert_success("C pong built against the trial install");
    assert_eq!(run.stdout, echoes("trial", 2), "{}", run.report());
    // Cargo gives tests an LD_LIBRARY_PATH: not to the program.
    let mut cmd = Command::new("ldd");
    cmd.env_remove("LD_LIBRARY_PATH").arg(&pong);
    let ldd = run_cmd(cmd, w.path(), "ldd", CHILD_TIMEOUT);
    let lib = format!("libipc.so => {}", libdir.join("libipc.so").display());
    assert!(ldd.stdout.contains(&lib), "{}", ldd.report());
    drop(pongd);
}
