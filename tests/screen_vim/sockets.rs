//! Sockets, SysV IPC and other kernel objects of issue 13: each state comes back exactly, or is
//! refused at checkpoint with one line naming the process and descriptor.

use super::roundtrip::*;
use super::*;

user_and_root! {
    /// Unix stream sockets that are not connected (never connected, or bound and not
    /// listening) come back as such, and one whose peer has closed keeps what the peer sent
    /// before it went: it reads that, then the end of the stream. Before, the first two
    /// failed the checkpoint with a bare EINVAL and the last came back as a fresh socket with
    /// its queue gone.
    fn unconnected_stream_sockets_and_one_whose_peer_closed_come_back(env, tag) {
        let path = env.dir.path().join("bound.sock");
        python_pane(&env, "a", "us");
        enter(
            &env,
            "a",
            &format!(
                "import socket as S; a = S.socket(S.AF_UNIX, S.SOCK_STREAM); d = S.socket(S.AF_UNIX, S.SOCK_STREAM); d.bind('{}'); b, c = S.socketpair(); c.send(b'left behind'); c.close(); print('ready', d.getsockname()[-10:])",
                path.display()
            ),
        );
        env.tmux.wait_text("a", "ready bound.sock", T);
        let image = image_path(&env, "us");
        checkpoint_and_end(&env, "us", &image);
        resume_pane(&env, "b", 100, 30, &image);
        env.tmux.wait_text("b", "ready bound.sock", T);
        enter(
            &env,
            "b",
            "l = S.socket(S.AF_UNIX, S.SOCK_STREAM); l.bind('\\0crterm-us-' + str(id(l))); l.listen(); a.connect(l.getsockname()); print('af' 'ter', d.getsockname()[-10:], b.recv(100), b.recv(100), a.getpeername() == l.getsockname())",
        );
        let screen = env.tmux.wait_text("b", "after ", T);
        assert!(
            screen.contains("after bound.sock b'left behind' b'' True"),
            "{screen}"
        );
        exit_repl(&env, "b");
        let _ = std::fs::remove_file(&image);
    }
}

user_and_root! {
    /// Epoll registrations whose number the process closed after registering (the kernel
    /// keeps them while the file lives through another descriptor), one whose number holds
    /// another file now, two through one number (the first file's closed, the second's open
    /// there), and one of a file only a child holds: each still reports its events with its
    /// own data, and the numbers hold what they held. Before, the resume failed (`epoll_ctl
    /// failed: Bad file descriptor`) or registered the wrong file; a child sharing the epoll
    /// set failed it too (`File exists`).
    fn epoll_registrations_outliving_their_descriptor_come_back(env, tag) {
        python_pane(&env, "a", "ep");
        for line in [
            "import os, select, time; e = select.epoll(); at = lambda n: (lambda p: (os.dup2(p[0], n), os.close(p[0]), p[1])[2])(os.pipe())",
            "w1 = at(40); e.register(40, select.EPOLLIN); keep1 = os.dup(40); os.close(40); w5 = at(40); e.register(40, select.EPOLLIN)",
            "w2 = at(41); e.register(41, select.EPOLLIN); keep2 = os.dup(41); w3 = at(41)",
            "w4 = at(42); e.register(42, select.EPOLLIN); k = os.fork() or time.sleep(1000); os.close(42); print('re' 'ady', len(open(f'/proc/self/fdinfo/{e.fileno()}').read().split('tfd:')) - 1)",
        ] {
            enter(&env, "a", line);
        }
        env.tmux.wait_text("a", "ready 4", T);
        let image = image_path(&env, "ep");
        checkpoint_and_end(&env, "ep", &image);
        resume_pane(&env, "b", 100, 30, &image);
        env.tmux.wait_text("b", "ready 4", T);
        enter(
            &env,
            "b",
            "os.write(w1, b'1'); os.write(w4, b'4'); got = sorted(fd for fd, ev in e.poll(1)); os.write(w3, b'3'); again = sorted(fd for fd, ev in e.poll(1)); os.write(w5, b'5'); third = sorted(fd for fd, ev in e.poll(1)); print('af' 'ter', got, again, third, os.read(41, 1), os.read(keep1, 1), os.read(40, 1))",
        );
        let after = env.tmux.wait_text("b", "after ", T);
        assert!(
            after.contains("after [40, 42] [40, 42] [40, 40, 42] b'3' b'1' b'5'"),
            "{after}"
        );
        enter(&env, "b", "os.kill(k, 9); exit()");
        let _ = std::fs::remove_file(&image);
    }
}

user_and_root! {
    /// A pty slave whose master the program closed (hung up) is refused at checkpoint, named;
    /// before, it was accepted and the resume failed (`cannot open /dev/pts/1 (deleted)`).
    fn a_hung_up_pty_slave_is_refused_at_checkpoint(env, tag) {
        python_pane(&env, "a", "hu");
        enter(
            &env,
            "a",
            "import os; m, s = os.openpty(); os.close(m); print('slave', s)",
        );
        env.tmux.wait_text("a", "slave 4", T);
        assert_refused(
            &env,
            "hu",
            "a",
            "process 2 (python3) holds fd 4, a pty slave whose master is closed (hung up)",
        );
    }
}

user_and_root! {
    /// Two listening sockets bound to one path (the first's file removed, the second bound
    /// there since) and one whose file was removed: each keeps its name, the path leads to
    /// the second, and the removed one's path stays free. Before, the resume failed ("cannot
    /// bind … again: a running program has it": the session's own other socket).
    fn sockets_whose_path_was_removed_or_taken_keep_their_names(env, tag) {
        let (p, q) = (
            env.dir.path().join("one.sock"),
            env.dir.path().join("gone.sock"),
        );
        python_pane(&env, "a", "sn");
        enter(
            &env,
            "a",
            &format!(
                "import os, socket as S; p, q = '{}', '{}'; mk = lambda n: (lambda s: (s.bind(n), s.listen(), s)[2])(S.socket(S.AF_UNIX)); s1 = mk(p); os.unlink(p); s2 = mk(p); s3 = mk(q); os.unlink(q); print('ready', os.path.exists(p), os.path.exists(q))",
                p.display(),
                q.display()
            ),
        );
        env.tmux.wait_text("a", "ready True False", T);
        let image = image_path(&env, "sn");
        checkpoint_and_end(&env, "sn", &image);
        resume_pane(&env, "b", 100, 30, &image);
        env.tmux.wait_text("b", "ready True False", T);
        enter(
            &env,
            "b",
            "c = S.socket(S.AF_UNIX); c.connect(p); s1.setblocking(False); s3.setblocking(False); a, _ = s2.accept(); print('af' 'ter', [s.getsockname() == n for s, n in ((s1, p), (s2, p), (s3, q))], os.path.exists(p), os.path.exists(q), len([x for x in (s1, s3) if x.recv_into if not __import__('select').select([x], [], [], 0)[0]]))",
        );
        let after = env.tmux.wait_text("b", "after ", T);
        assert!(
            after.contains("after [True, True, True] True False 2"),
            "{after}"
        );
        exit_repl(&env, "b");
        let _ = std::fs::remove_file(&image);
    }
}

user_and_root! {
    /// A socket bound to a relative name is bound again in the directory it was bound in (the
    /// program's working directory), under that same relative name, whatever directory the
    /// resume runs in. Before, it was bound relative to where `crterm resume` ran.
    fn a_socket_bound_to_a_relative_name_is_bound_where_it_was(env, tag) {
        let dir = env.dir.path().join("rel");
        std::fs::create_dir(&dir).unwrap();
        let _ = std::process::Command::new("chmod")
            .arg("777")
            .arg(&dir)
            .output();
        python_pane(&env, "a", "rn");
        enter(
            &env,
            "a",
            &format!(
                "import os, socket as S; os.chdir('{}'); s = S.socket(S.AF_UNIX); s.bind('rel.sock'); s.listen(); print('ready', s.getsockname())",
                dir.display()
            ),
        );
        env.tmux.wait_text("a", "ready rel.sock", T);
        let image = image_path(&env, "rn");
        checkpoint_and_end(&env, "rn", &image);
        resume_pane(&env, "b", 100, 30, &image);
        env.tmux.wait_text("b", "ready rel.sock", T);
        enter(
            &env,
            "b",
            "c = S.socket(S.AF_UNIX); c.connect(os.path.join(os.getcwd(), 'rel.sock')); a, _ = s.accept(); print('af' 'ter', s.getsockname(), os.path.exists('rel.sock'))",
        );
        let after = env.tmux.wait_text("b", "after ", T);
        assert!(after.contains("after rel.sock True"), "{after}");
        assert!(dir.join("rel.sock").exists());
        exit_repl(&env, "b");
        let _ = std::fs::remove_file(&image);
    }
}

user_and_root! {
    /// The mode and owner of a pty's device node come back: the session's own terminal
    /// after `mesg n` (group write taken away), and a pty the program opened, chmod'ed 600
    /// and, as root, given to group 100 (an ordinary user's session maps no group but the
    /// user's own, which the pty has already).
    fn a_ptys_mode_comes_back(env, tag) {
        python_pane(&env, "a", "pm");
        enter(
            &env,
            "a",
            "import os; m, s = os.openpty(); g = os.fstat(s).st_gid; os.fchmod(s, 0o600); os.fchmod(0, 0o600); want = 100 if os.getuid() == 0 else g; os.fchown(s, -1, want); st = lambda: [oct(os.fstat(f).st_mode & 0o777) for f in (0, s)] + [os.fstat(s).st_gid == want]; print('ready', st())",
        );
        env.tmux.wait_text("a", "ready ['0o600', '0o600', True]", T);
        let image = image_path(&env, "pm");
        checkpoint_and_end(&env, "pm", &image);
        resume_pane(&env, "b", 100, 30, &image);
        env.tmux.wait_text("b", "ready [", T);
        enter(&env, "b", "print('af' 'ter', st())");
        let after = env.tmux.wait_text("b", "after [", T);
        assert!(after.contains("after ['0o600', '0o600', True]"), "{after}");
        exit_repl(&env, "b");
        let _ = std::fs::remove_file(&image);
    }
}

user_and_root! {
    /// The logging pattern: a datagram receiver bound to a path with datagrams queued (from
    /// an unbound client sending to its path, and from a client connected to it, which it is
    /// not connected back to). The receiver keeps its queue in order, the connected client
    /// stays connected to it (what it sends arrives), and nothing else changes. Before, the
    /// connected client was refused at checkpoint, and without it the receiver's queue came
    /// back empty.
    fn a_datagram_receiver_keeps_its_queue_and_its_connected_clients(env, tag) {
        let p = env.dir.path().join("log.sock");
        python_pane(&env, "a", "dg");
        enter(
            &env,
            "a",
            &format!(
                "import socket as S; p = '{}'; r = S.socket(S.AF_UNIX, S.SOCK_DGRAM); r.bind(p); c = S.socket(S.AF_UNIX, S.SOCK_DGRAM); c.sendto(b'one', p); k = S.socket(S.AF_UNIX, S.SOCK_DGRAM); k.connect(p); k.send(b'two'); c.sendto(b'three', p); print('ready')",
                p.display()
            ),
        );
        env.tmux.wait_text("a", "\nready", T);
        let image = image_path(&env, "dg");
        checkpoint_and_end(&env, "dg", &image);
        resume_pane(&env, "b", 100, 30, &image);
        env.tmux.wait_text("b", "\nready", T);
        enter(
            &env,
            "b",
            "k.send(b'four'); r.setblocking(False); print('af' 'ter', [r.recv(100) for _ in range(4)], k.getpeername() == p)",
        );
        let after = env.tmux.wait_text("b", "after [", T);
        assert!(
            after.contains("after [b'one', b'two', b'three', b'four'] True"),
            "{after}"
        );
        exit_repl(&env, "b");
        let _ = std::fs::remove_file(&image);
    }
}

user_and_root! {
    /// UDP sockets: one bound to a port, one connected to it (with the port the kernel gave
    /// it); each comes back with its addresses, and what the second sends reaches the first
    /// from the same address. Before, any UDP socket was refused at checkpoint.
    fn udp_sockets_come_back_bound_and_connected(env, tag) {
        python_pane(&env, "a", "ud");
        enter(
            &env,
            "a",
            "import socket as S; u = S.socket(S.AF_INET, S.SOCK_DGRAM); u.bind(('127.0.0.1', 0)); v = S.socket(S.AF_INET, S.SOCK_DGRAM); v.connect(u.getsockname()); names = (u.getsockname(), v.getsockname(), v.getpeername()); print('ready', names[0][1] > 0)",
        );
        env.tmux.wait_text("a", "ready True", T);
        let image = image_path(&env, "ud");
        checkpoint_and_end(&env, "ud", &image);
        resume_pane(&env, "b", 100, 30, &image);
        env.tmux.wait_text("b", "ready True", T);
        enter(
            &env,
            "b",
            "v.send(b'hi'); u.settimeout(5); got = u.recvfrom(100); print('af' 'ter', names == (u.getsockname(), v.getsockname(), v.getpeername()), got == (b'hi', names[1]))",
        );
        let after = env.tmux.wait_text("b", "after ", T);
        assert!(after.contains("after True True"), "{after}");
        exit_repl(&env, "b");
        let _ = std::fs::remove_file(&image);
    }
}

user_and_root! {
    /// Datagrams queued on UDP sockets by the session's own senders come back, in order,
    /// each from its sender's address to where it was sent (IPv4 from a wildcard-bound
    /// and a connected sender, an empty one, IPv6, and IPv4 into a dual-stack socket).
    /// A checkpoint that does not end the session leaves the queues as they were. Before,
    /// a UDP socket with datagrams queued was refused at checkpoint.
    fn udp_datagrams_queued_by_the_session_come_back(env, tag) {
        python_pane(&env, "a", "uk");
        enter(
            &env,
            "a",
            "import socket as S; D = S.SOCK_DGRAM; u = S.socket(S.AF_INET, D); u.bind(('127.0.0.1', 0)); v = S.socket(S.AF_INET, D); v.bind(('0.0.0.0', 0)); w = S.socket(S.AF_INET, D); w.connect(u.getsockname())",
        );
        enter(
            &env,
            "a",
            "x = S.socket(S.AF_INET6, D); x.bind(('::1', 0)); y = S.socket(S.AF_INET6, D); y.bind(('::1', 0)); z = S.socket(S.AF_INET6, D); z.bind(('::', 0))",
        );
        enter(
            &env,
            "a",
            "fill = lambda: ([v.sendto(m, u.getsockname()) for m in (b'one', b'', b'three')], w.send(b'w1'), y.sendto(b'six', x.getsockname()), v.sendto(b'mapped', ('127.0.0.1', z.getsockname()[1]))); fill()",
        );
        enter(
            &env,
            "a",
            "import time; time.sleep(0.2); want = [(b'one', v.getsockname()[1]), (b'', v.getsockname()[1]), (b'three', v.getsockname()[1]), (b'w1', w.getsockname()[1]), (b'six', y.getsockname()), (b'mapped', v.getsockname()[1])]; print('ready', len(want))",
        );
        env.tmux.wait_text("a", "ready 6", T);
        // What a receive gets: (bytes, the sender's port, or its whole IPv6 address).
        let got = "u.setblocking(False); x.setblocking(False); z.setblocking(False); got = [(m, f[1]) for m, f in (u.recvfrom(100) for _ in range(4))] + [(m, f) for m, f in (x.recvfrom(100),)] + [(m, f[1]) for m, f in (z.recvfrom(100),)]";
        // A checkpoint that goes on: the queues are still there, and what is read then
        // is sent again so that the image and the session hold the same.
        let image = image_path(&env, "uk-on");
        let out = env.crterm(&["checkpoint", "uk", "-o", image.to_str().unwrap()]);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        enter(&env, "a", &format!("{got}; print('kept', got == want, got[4][0], got[5][1] == v.getsockname()[1])"));
        let kept = env.tmux.wait_text("a", "kept ", T);
        assert!(kept.contains("kept True b'six' True"), "{kept}");
        let _ = std::fs::remove_file(&image);
        enter(
            &env,
            "a",
            "fill(); time.sleep(0.2); print('again', u.getsockopt(S.SOL_SOCKET, 42), u.getsockopt(S.IPPROTO_IP, 8))",
        );
        env.tmux.wait_text("a", "again -1 0", T);
        let image = image_path(&env, "uk");
        checkpoint_and_end(&env, "uk", &image);
        resume_pane(&env, "b", 100, 30, &image);
        env.tmux.wait_text("b", "again -1 0", T);
        enter(&env, "b", &format!("{got}; print('af' 'ter', got == want, got)"));
        let after = env.tmux.wait_text("b", "after ", T);
        assert!(after.contains("after True"), "{after}");
        exit_repl(&env, "b");
        let _ = std::fs::remove_file(&image);
    }
}

user_and_root! {
    /// A UDP socket with a datagram queued from outside the session is refused at
    /// checkpoint, named with the sender's address: nothing of the session can send it
    /// again.
    fn a_udp_datagram_from_outside_the_session_is_refused_at_checkpoint(env, tag) {
        python_pane(&env, "a", "uq");
        enter(
            &env,
            "a",
            "import socket as S; u = S.socket(S.AF_INET, S.SOCK_DGRAM); u.bind(('127.0.0.1', 0)); print('po' 'rt=%d; fd %d' % (u.getsockname()[1], u.fileno()))",
        );
        let shown = env.tmux.wait_text("a", "; fd 3", T);
        let port: u16 = shown
            .split("port=")
            .nth(1)
            .and_then(|t| t.split(';').next())
            .and_then(|p| p.parse().ok())
            .expect("the port");
        let outside = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        outside.send_to(b"x", ("127.0.0.1", port)).unwrap();
        let from = outside.local_addr().unwrap();
        assert_refused(
            &env,
            "uq",
            "a",
            &format!("process 2 (python3) holds fd 3, a UDP socket with a datagram queued from {from}, which no socket of the session sends from"),
        );
        enter(&env, "a", "print('read', u.recv(10))");
        env.tmux.wait_text("a", "read b'x'", T);
    }
}

user_and_root! {
    /// What the resume has to say (here: a TCP connection to the outside comes back closed)
    /// is shown over the repainted screen for a few seconds, then the screen is drawn again
    /// from the model without it, with nothing typed; before, it stayed on the bottom rows
    /// until something drew over them.
    fn resume_notices_go_away_by_themselves(env, tag) {
        let outside = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = outside.local_addr().unwrap().port();
        python_pane(&env, "a", "nt");
        enter(
            &env,
            "a",
            &format!(
                "import socket; t = socket.create_connection(('127.0.0.1', {port})); [print('row', i) for i in range(40)] and None"
            ),
        );
        let (_peer, _) = outside.accept().unwrap();
        env.tmux.wait_text("a", "row 39", T);
        let image = image_path(&env, "nt");
        checkpoint_and_end(&env, "nt", &image);
        resume_pane(&env, "b", 100, 30, &image);
        env.tmux.wait_text("b", "comes back closed", T);
        wait_for("the notice to go", Duration::from_secs(15), || {
            let s = env.tmux.capture_plain("b");
            (!s.contains("comes back closed") && s.contains("row 39")).then_some(())
        });
        let screen = env.tmux.capture_plain("b");
        let last = screen
            .lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .unwrap_or("");
        assert!(last.starts_with(">>>"), "{screen}");
        exit_repl(&env, "b");
        let _ = std::fs::remove_file(&image);
    }
}

user_and_root! {
    /// A netlink route socket (as `ip` and glibc's getaddrinfo open them) comes back bound to
    /// its port id and groups, and answers a request: the links of the session's network.
    /// (A port id another program holds by then is an error of the resume, as a TCP port
    /// is.)
    /// Before, every netlink socket was refused at checkpoint.
    fn a_netlink_route_socket_comes_back_and_answers(env, tag) {
        // A port id of its own, above every pid: an automatic one is the process's pid in
        // its namespace, 2 in every session, which two sessions (this test as a user and
        // as root, at once) cannot both have in the one network namespace.
        let port = 0x4000_0000 + 2 * std::process::id() + u32::from(tag == "r");
        python_pane(&env, "a", "nl");
        enter(
            &env,
            "a",
            &format!("import socket, struct, os; n = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW); n.bind(({port}, 1)); name = n.getsockname(); ask = lambda: (n.send(struct.pack('=LHHLLBxHiII', 32, 18, 0x301, 1, 0, 0, 0, 0, 0, 0)), struct.unpack('=LH', n.recv(65536)[:6])[1])[1]; print('ready', name[0] == {port}, name[1] == 1)"),
        );
        env.tmux.wait_text("a", "ready True True", T);
        let image = image_path(&env, "nl");
        checkpoint_and_end(&env, "nl", &image);
        resume_pane(&env, "b", 100, 30, &image);
        env.tmux.wait_text("b", "ready True True", T);
        enter(
            &env,
            "b",
            "print('af' 'ter', n.getsockname() == name, ask())",
        );
        let after = env.tmux.wait_text("b", "after ", T);
        // 16: RTM_NEWLINK, the first answer to RTM_GETLINK.
        assert!(after.contains("after True 16"), "{after}");
        exit_repl(&env, "b");
        let _ = std::fs::remove_file(&image);
    }
}

user_and_root! {
    /// A fanotify group (an ordinary user may make one for inode marks) is refused at
    /// checkpoint by that name: its marks and queued events cannot be read and set again.
    fn a_fanotify_group_is_refused_at_checkpoint_by_name(env, tag) {
        python_pane(&env, "a", "fa");
        // FAN_CLASS_NOTIF | FAN_REPORT_FID: what an ordinary user may ask for.
        enter(
            &env,
            "a",
            "import ctypes; fa = ctypes.CDLL(None, use_errno=True).fanotify_init(0x200, 0); print('fan' 'otify', fa > 0, ctypes.get_errno())",
        );
        // (The whole line: the pane may show it in two draws.)
        env.tmux.wait_text("a", "fanotify True 0", T);
        assert_refused(
            &env,
            "fa",
            "a",
            "a fanotify group (its marks and queued events",
        );
    }
}

/// An inotify watch on a directory nothing else of the session leads to (not open, not
/// mapped, not above those): as an ordinary user its path cannot be found (the kernel
/// gives its inode and file handle, and opening a handle takes privilege), so it is
/// refused at checkpoint, named.
#[test]
fn an_inotify_watch_whose_path_cannot_be_found_is_refused_for_a_user() {
    let env = Env::unprivileged();
    inotify_watch_session(&env, "iu");
    assert_refused(&env, "iu", "a", "an inotify watch (wd 1) on inode");
}

/// As root, the same watch's path is found by opening the kernel's file handle of it
/// (open_by_handle_at): it comes back and reports what happens in the directory.
#[test]
#[ignore = "needs root (open_by_handle_at takes CAP_DAC_READ_SEARCH); run by tests/run-all.sh as root"]
fn an_inotify_watch_found_by_its_file_handle_comes_back_as_root() {
    let env = Env::root();
    let dir = inotify_watch_session(&env, "ir");
    let image = image_path(&env, "ir");
    checkpoint_and_end(&env, "ir", &image);
    resume_pane(&env, "b", 100, 30, &image);
    env.tmux.wait_text("b", "watching 1", T);
    std::fs::write(dir.join("new-file"), "x").unwrap();
    enter(
        &env,
        "b",
        "ev = os.read(fd, 4096); print('af' 'ter', struct.unpack('iIII', ev[:16])[0], ev[16:].rstrip(b'\\0'))",
    );
    // (The whole line: caught as it is drawn, "after " can come before its end.)
    let after = env.tmux.wait_text("b", "after 1 b'new-file'", T);
    assert!(after.contains("after 1 b'new-file'"), "{after}");
    exit_repl(&env, "b");
    let _ = std::fs::remove_file(&image);
}

/// A python session in pane "a" watching (IN_CREATE) a directory two levels below the
/// test's directory, which nothing else of the session leads to; returns the directory.
fn inotify_watch_session(env: &Env, name: &str) -> std::path::PathBuf {
    let dir = env.dir.path().join("watched").join("deep");
    std::fs::create_dir_all(&dir).unwrap();
    let _ = std::process::Command::new("chmod")
        .args(["-R", "777"])
        .arg(env.dir.path().join("watched"))
        .output();
    python_pane(env, "a", name);
    enter(
        env,
        "a",
        &format!(
            "import ctypes, os, struct; L = ctypes.CDLL(None); fd = L.inotify_init(); print('watching', L.inotify_add_watch(fd, b'{}', 0x100))",
            dir.display()
        ),
    );
    env.tmux.wait_text("a", "watching 1", T);
    dir
}

/// As root, a process under a seccomp filter (here: getppid answers EPERM) comes back
/// under the same filter: it still applies after the resume, and /proc says so.
#[test]
#[ignore = "needs root (PTRACE_SECCOMP_GET_FILTER takes CAP_SYS_ADMIN); run by tests/run-all.sh as root"]
fn a_seccomp_filter_comes_back_and_still_applies_as_root() {
    let env = Env::root();
    python_pane(&env, "a", "sc");
    for line in [
        "import ctypes, os, struct; L = ctypes.CDLL(None); ins = struct.pack('=' + 'HBBI' * 4, 0x20, 0, 0, 0, 0x15, 0, 1, 110, 0x06, 0, 0, 0x50001, 0x06, 0, 0, 0x7fff0000); buf = ctypes.create_string_buffer(ins)",
        "prog = struct.pack('=HxxxxxxQ', 4, ctypes.addressof(buf)); st = lambda: [l.split()[1] for l in open('/proc/self/status') if l.startswith('Seccomp')]",
        "print('set', L.prctl(22, 2, ctypes.c_char_p(prog), 0, 0), os.getppid(), st())",
    ] {
        enter(&env, "a", line);
    }
    env.tmux.wait_text("a", "set 0 -1 ['2', '1']", T);
    let image = image_path(&env, "sc");
    checkpoint_and_end(&env, "sc", &image);
    resume_pane(&env, "b", 100, 30, &image);
    env.tmux.wait_text("b", "set 0 -1", T);
    enter(
        &env,
        "b",
        "print('af' 'ter', os.getppid(), os.getpid() > 0, st())",
    );
    let after = env.tmux.wait_text("b", "after ", T);
    assert!(after.contains("after -1 True ['2', '1']"), "{after}");
    exit_repl(&env, "b");
    let _ = std::fs::remove_file(&image);
}

user_and_root! {
    /// Descriptors in flight (`inflight.c`): sent with SCM_RIGHTS over a stream, a datagram
    /// and a seqpacket pair and not received yet: a pipe's two ends, a file also held by the
    /// sender (one description: the offset is shared), one end of a connected pair with bytes
    /// queued, an eventfd, and a datagram socket whose own queue carries files. A checkpoint
    /// that lets the session go on leaves them in place, and a resume sends them again at
    /// their messages: the program receives the same (the same receive boundaries, the same
    /// descriptors per message) and the files work as they did, as a run with no checkpoint
    /// shows. Before, any descriptor in flight was refused at checkpoint.
    fn descriptors_in_flight_are_sent_again_at_their_messages(env, tag) {
        let bin = build_c(&env, "inflight");
        let data = env.dir.path().join("data.txt");
        std::fs::write(&data, "0123456789abcdefghij").unwrap();
        // What the program receives with no checkpoint in between.
        let mut alone = std::process::Command::new(&bin)
            .arg(&data)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        use std::io::Write;
        alone.stdin.take().unwrap().write_all(b"\n").unwrap();
        let oracle = alone.wait_with_output().unwrap();
        let oracle = String::from_utf8_lossy(&oracle.stdout).into_owned();
        let oracle = oracle
            .lines()
            .find(|l| l.starts_with("RESULT"))
            .unwrap_or_else(|| panic!("inflight.c alone: {oracle}"))
            .trim_end()
            .to_string();
        assert!(
            oracle.contains("abcmsg1/2 [through the pipe] [567] offset 8"),
            "{oracle}"
        );
        // Wide enough for the whole line.
        env.tmux.start(
            "a",
            200,
            30,
            &format!(
                "{} start --name if -- {} {}",
                env.crterm_cmd(),
                bin.display(),
                data.display()
            ),
        );
        env.tmux.wait_text("a", "READY", T);
        env.wait_foreground("if", "inflight");
        let image = image_path(&env, "if");
        let out = env.crterm(&["checkpoint", "if", "-o", image.to_str().unwrap()]);
        assert!(out.status.success(), "{out:?}");
        // Five messages carry files; six descriptions only they hold (the file's first
        // description is the program's too).
        let info = env.crterm(&["info", image.to_str().unwrap()]);
        let info = String::from_utf8_lossy(&info.stdout);
        assert!(
            info.contains("in flight  5 messages carrying descriptors, 6 of them held by no process"),
            "{info}"
        );
        // The session goes on as if nothing happened.
        env.tmux.send_keys("a", &["Enter"]);
        let screen = env.tmux.wait_dead("a", T);
        assert!(screen.contains(&oracle), "{oracle}\n{screen}");
        // And the resume brings the same back.
        resume_pane(&env, "b", 200, 30, &image);
        env.tmux.wait_text("b", "READY", T);
        env.tmux.send_keys("b", &["Enter"]);
        let screen = env.tmux.wait_text("b", "CRTERM_EXIT=", T);
        assert!(screen.contains(&oracle), "{oracle}\n{screen}");
        let _ = std::fs::remove_file(&image);
    }
}

/// SysV IPC in the session's own namespace (`sysv.c`): segments attached (read-write,
/// read-only, split by mprotect, shared with a child), not attached, and removed while
/// attached; a semaphore set; a message queue with messages of two types. Each comes
/// back with its id, key, mode, size, attachments, content, values and messages. Before,
/// any SysV object was refused at checkpoint.
#[test]
fn sysv_segments_semaphores_and_message_queues_come_back() {
    carried_state(&Env::unprivileged(), "sysv", "", "sv", "SYSV OK");
}

#[test]
#[ignore = "needs root; run by tests/run-all.sh as root"]
fn sysv_objects_come_back_as_root() {
    carried_state(&Env::root(), "sysv", "", "svr", "SYSV OK");
}

user_and_root! {
    /// A process the kernel keeps semaphore adjustments for (semop with SEM_UNDO) is refused
    /// at checkpoint, named: the adjustments cannot be read, and a resume without them would
    /// not undo them at its exit.
    fn semaphore_adjustments_to_undo_are_refused_at_checkpoint(env, tag) {
        let bin = build_c(&env, "sysv");
        env.pane(
            "a",
            &format!(
                "{} start --name su -- {} undo",
                env.crterm_cmd(),
                bin.display()
            ),
        );
        env.tmux.wait_text("a", "READY", T);
        let image = image_path(&env, "su");
        let out = env.crterm(&["checkpoint", "su", "-o", image.to_str().unwrap(), "--exit"]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success());
        assert!(
            err.contains("(sysv) has a SysV semaphore undo list"),
            "{err}"
        );
        assert!(!image.exists());
        env.tmux.send_keys("a", &["Enter"]);
        env.tmux.wait_text("a", "SYSV OK", T);
    }
}
