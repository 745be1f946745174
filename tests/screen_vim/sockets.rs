//! Sockets and other descriptors of issue 13: each state comes back exactly, or is
//! refused at checkpoint with one line naming the process and descriptor.

use super::roundtrip::*;
use super::*;

/// Unix stream sockets that are not connected (never connected, or bound and not
/// listening) come back as such, and one whose peer has closed keeps what the peer sent
/// before it went: it reads that, then the end of the stream. Before, the first two
/// failed the checkpoint with a bare EINVAL and the last came back as a fresh socket with
/// its queue gone.
#[test]
fn unconnected_stream_sockets_and_one_whose_peer_closed_come_back() {
    let env = Env::unprivileged();
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
    enter(&env, "b", "exit()");
    let _ = std::fs::remove_file(&image);
}
