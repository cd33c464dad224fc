//! The control plane as a user sees it: the real binary over real TCP and Unix sockets.

mod common;
use common::*;

#[test]
fn ping_over_tcp_and_unix_and_ctl() {
    let a = Agent::start(&[]);
    assert!(a.ready.starts_with("ready tcp=127.0.0.1:"), "{}", a.ready);
    assert!(a.ready.ends_with(" beacon=off"), "{}", a.ready);
    assert_eq!(a.tcp().req("PING"), "PONG");
    assert_eq!(a.unix().req("ping"), "PONG");
    let (code, out, _) = a.ctl(&["PING"]);
    assert_eq!((code, out.as_str()), (0, "PONG\n"));
    let (status, _) = a.stop();
    assert_eq!(status.code(), Some(0));
}
