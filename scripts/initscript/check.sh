#!/bin/sh
# board/tether.init as a busybox board runs it: run by scripts/test-initscript as /check.sh
# inside a tree holding only busybox (ash, its start-stop-daemon and applets), the static
# agent as /usr/local/bin/tether, the script as /etc/init.d/tether; users root, tether,
# pi (groups tether and adm), bob (neither) and carol (tetherctl). One line per check.
# shellcheck disable=SC2317
PATH=/bin:/usr/local/bin
export PATH
pass=0
fail=0
ok() { pass=$((pass + 1)); echo "ok   $1"; }
bad() {
    fail=$((fail + 1))
    echo "FAIL $1"
    shift
    [ $# -eq 0 ] || printf '     %s\n' "$@"
}
# check NAME CMD...: ok when CMD succeeds; else FAIL with what the last init call printed.
check() {
    name=$1
    shift
    if "$@"; then ok "$name"; else bad "$name" "$(cat /tmp/out)"; fi
}
# init ARGS...: /etc/init.d/tether ARGS as root; its output in /tmp/out, its code in $rc.
init() {
    /etc/init.d/tether "$@" >/tmp/out 2>&1
    rc=$?
}
# as USER CMD: CMD run by USER (busybox su sets the user's groups).
as() { su "$1" -s /bin/sh -c "$2" >/tmp/out 2>&1; }
agent_pid() {
    p=$(cat /run/tether.pid 2>/dev/null) && [ "$(cat "/proc/$p/comm" 2>/dev/null)" = tether ] && echo "$p"
}
agents() { for c in /proc/[0-9]*/comm; do cat "$c" 2>/dev/null; done | grep -cx tether; }
pong() { [ "$(tether ctl -s /run/tether/tether.sock PING 2>&1)" = PONG ]; }
args() { printf 'TETHER_ARGS="%s"\n' "$*" >/etc/default/tether; }

base="--no-beacon --listen 127.0.0.1:4545 --token-file /etc/tether/token"
args "$base"

# Started from another directory: the agent runs in / (busybox's start-stop-daemon does
# not change directory; a USB stick's mount would be kept busy).
cd /tmp || exit 1
init start
pid=$(agent_pid)
check "start: exit 0, OK with the agent's pid" test "$rc" = 0 -a -n "$pid" -a "$(cat /tmp/out)" = "Starting tether: OK (pid $pid)"
check "start: PONG from the agent" pong
check "start: the agent runs in /, as user tether" test "$(readlink "/proc/$pid/cwd")" = / -a "$(stat -c %U "/proc/$pid")" = tether
cd / || exit 1
init start
check "start again: exit 0, already running, one agent" test "$rc" = 0 -a "$(agent_pid)" = "$pid" -a "$(agents)" = 1
as pi '/etc/init.d/tether status'
check "status run by a member of group tether: running (0)" test $? = 0
as pi 'tether ctl -s /run/tether/tether.sock PING'
check "ctl as a member of group tether: PONG" test "$(cat /tmp/out)" = PONG
as bob 'tether ctl -s /run/tether/tether.sock PING'
check "ctl as a user outside group tether: refused (77)" test $? = 77
as pi '/etc/init.d/tether stop'
check "stop run by a non-root user: exit 4, the agent still runs" test $? = 4 -a "$(agent_pid)" = "$pid"
as pi 'cat /var/log/tether.log'
check "the log: group adm reads it, each log line begins with the time (UTC)" \
    grep -qE '^20[0-9]{2}-[01][0-9]-[0-3][0-9]T[0-2][0-9]:[0-5][0-9]:[0-5][0-9]Z \[INFO  tether::daemon\] ready ' /tmp/out
grep -q '^\[' /tmp/out && bad "a log line without the time" "$(cat /tmp/out)"

printf 'tok-two\n' >/etc/tether/token
init reload
check "reload: exit 0, the same agent" test "$rc" = 0 -a "$(agent_pid)" = "$pid"
sleep 1
check "reload: the agent re-read its token file" grep -q 'token reloaded from /etc/tether/token' /var/log/tether.log

init restart
npid=$(agent_pid)
check "restart: exit 0, a new agent, PONG" test "$rc" = 0 -a -n "$npid" -a "$npid" != "$pid"
pong || bad "restart: PONG"

init stop
check "stop: exit 0, no agent, no pid file, no socket" test "$rc" = 0 -a "$(agents)" = 0 -a ! -e /run/tether.pid -a ! -e /run/tether/tether.sock
init stop
check "stop when stopped: exit 0" test "$rc" = 0
init status
check "status when stopped: 3" test "$rc" = 3

# An agent killed (OOM, kill -9) leaves its pid file and its socket file: a start that
# then fails must say so (the old socket is no sign of a ready agent), with this start's
# error alone (not the last run's lines).
init start
kill -9 "$(agent_pid)"
sleep 0.2
init status
check "agent killed: status 1 (dead, pid file left)" test "$rc" = 1
check "agent killed: its socket file is left" test -S /run/tether/tether.sock
args "$base --bogus"
init start
check "start with a bad option after that: exit 1, FAILED, the agent's error line alone" \
    test "$rc" = 1 -a "$(head -n 1 /tmp/out)" = "Starting tether: FAILED" -a "$(grep -c 'error: ' /tmp/out)" = 1 -a "$(grep -c ready /tmp/out)" = 0
grep -q -- '--bogus' /tmp/out || bad "the FAILED start names the bad option" "$(cat /tmp/out)"

# An --led that never becomes writable: the agent waits up to 5 s for udev, then exits 78.
args "$base --led /sys/class/leds/none"
init start
check "start with an --led that is not there: FAILED, after the agent's wait" \
    test "$rc" = 1 -a "$(grep -c 'error: --led /sys/class/leds/none' /tmp/out)" = 1 -a "$(agents)" = 0

# --socket-group: the socket is the group's (0660), and /run/tether lets it through.
args "$base --socket-group tetherctl"
init start
check "--socket-group: start exit 0" test "$rc" = 0
as carol 'tether ctl -s /run/tether/tether.sock PING'
check "--socket-group: a member of that group gets PONG" test "$(cat /tmp/out)" = PONG
as bob 'tether ctl -s /run/tether/tether.sock PING'
check "--socket-group: a user outside it is refused (77)" test $? = 77
init stop

# Started by a caller whose pipe is open on a descriptor above stderr (a provisioning
# tool's, a shell's saved one; here `9>&1` inside `$(...)`), which busybox's
# start-stop-daemon passes on: the agent keeps none of them, or the reader would wait for
# the end of that pipe for as long as the agent runs.
args "$base"
# shellcheck disable=SC2016
timeout 20 sh -c 'x=$(/etc/init.d/tether start 9>&1); echo "$x"' >/tmp/out 2>&1
check "start inside \$(...): returns (exit 0), the agent keeps no descriptor of the caller's" test $? = 0
pid=$(agent_pid)
# shellcheck disable=SC2012
extra=$(ls "/proc/$pid/fd" 2>/dev/null | while read -r fd; do
    [ "$fd" -gt 2 ] && readlink "/proc/$pid/fd/$fd"; done | grep -c pipe)
check "the agent holds no pipe but its own" test "$extra" = 0
init stop

# The binary missing (busybox's ash; the boot runs start). The package's /usr/bin/tether
# (absent here) gone is a removed package whose script stays: exit 0, nothing said. The
# by-hand /usr/local/bin/tether missing is a mistake: exit 5 (LSB: not installed), said.
DAEMON=/usr/bin/tether /etc/init.d/tether start >/tmp/out 2>&1
check "the package's /usr/bin/tether gone: start exits 0, quietly" test $? = 0 -a ! -s /tmp/out -a "$(agents)" = 0
mv /usr/local/bin/tether /usr/local/bin/tether.away
init start
check "/usr/local/bin/tether missing: start exits 5, says so" test "$rc" = 5 -a "$(grep -c 'tether: /usr/local/bin/tether not found' /tmp/out)" = 1 -a "$(agents)" = 0
mv /usr/local/bin/tether.away /usr/local/bin/tether

echo "$pass passed, $fail failed"
[ "$fail" = 0 ]
