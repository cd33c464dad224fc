//! Every size and capacity of tether in one place, checked at compile time.
//!
//! Nothing here does I/O. Changing a number here is the only way to change a buffer size;
//! the asserts at the bottom keep the numbers consistent with each other.

/// Longest request line, in bytes, not counting the terminating `\n` (or `\r\n`).
pub const LINE_MAX: usize = 255;
/// Per-client input buffer: one maximal line plus `\r\n`.
pub const IN_BUF: usize = LINE_MAX + 2;
/// Largest single reply line, `\n` included: SOCKETS with every socket at its widest
/// ([`SOCKETS_REPLY_MAX`], 12060; 11917 measured) and STATUS with a full fact table
/// ([`STATUS_REPLY_MAX`], 11317; 10709 measured) are the largest.
///
/// It was 10240, which assumed that JSON escaping at most doubles a name; but `é` in a
/// `--socket` path is 3 times its bytes escaped, and a control byte in a host or interface
/// name (which the kernel allows) 6 times (see [`JSON_ESCAPE_MAX_FACTOR`]), so both replies
/// could answer `ERR busy reply too large`. 12 KiB costs no memory: nothing is allocated
/// with this size. It is only the room a client's output buffer ([`OUT_BUF`], allocated
/// whole at start-up either way: `MAX_CLIENTS * (OUT_BUF + IN_BUF)`, 260 KiB, unchanged)
/// must have free before its next request line is answered, so RSS does not change; what
/// changes is that a client may leave 4 KiB of replies unread (was 6 KiB) before answering
/// it waits for a flush. Tightening an input instead would refuse what Linux and users
/// name as they like (socket paths and interface names outside ASCII) or the 16th client.
pub const REPLY_MAX: usize = 12288;
/// Per-client output buffer. A client whose unread replies exceed this is closed.
pub const OUT_BUF: usize = 16384;
/// `tether ctl`: the longest reply line it reads, `\n` included. The agent writes each
/// reply whole into its output buffer, so no line it sends is longer than [`OUT_BUF`] (its
/// largest reply is [`REPLY_MAX`]); a longer one is not tether's protocol (exit 76).
pub const CTL_REPLY_LINE_MAX: usize = OUT_BUF;
/// `tether ctl`: the characters of a reply that is not tether's protocol that its one
/// error line quotes, at most (escaped): a stranger's 16 KiB line gives a short error.
pub const CTL_QUOTE_MAX: usize = 64;

/// Reads per control client per turn, so one fast client cannot starve the others.
pub const READS_PER_TURN: usize = 16;
/// While control clients keep the loop busy, at most this many turns in a row poll only
/// the clients and the TCP listeners, without waiting; then one polls every fd (see
/// `RunLoop::run`). Bounds how late, under load, a signal, a Unix connection, a publish
/// datagram, a scan probe or a scrape is seen: this many turns of a few microseconds.
pub const QUICK_POLLS: u8 = 15;
/// Closing and refused connections are half-closed and drained ("lingered") this long at
/// most, so a reset does not destroy the last reply; at most this many at once: 16, and
/// one for each HTTP slot, whose connections closing after their last response linger
/// here too (they did in their slots: a scrape flood does not push others out sooner).
pub const LINGER_SECS: u64 = 2;
pub const LINGER_MAX: usize = 16 + HTTP_SLOTS;
/// What a lingering connection sends (control or HTTP) is read into (and dropped from) a
/// stack buffer this big.
pub const LINGER_SINK: usize = 512;
/// Connections accepted while every client slot is taken wait at most until the end of
/// the loop turn for one (hang-ups read in that turn free slots); this many at once.
pub const ACCEPT_WAITING_MAX: usize = 16;
/// `-vv` logs each request with at most this many bytes of its reply.
pub const TRACE_REPLY_MAX: usize = 120;
/// A pipe or terminal on stderr that the agent may not reopen non-blocking is written only
/// when poll(2) says it takes more, and then at most this much at a time: what a pipe with a
/// free page takes without waiting (`sys::stderr`).
pub const LOG_POLLED_WRITE_MAX: usize = 4096;
/// A log line, at most (`sys::stderr::Logger`, on the stack): longer ones are cut. Room for
/// the longest the agent writes (a 360-byte path and the text around it) twice over.
pub const LOG_LINE_MAX: usize = 1024;
/// The "N log line(s) dropped" note, in bytes at most.
pub const LOG_DROPPED_NOTE_MAX: usize = 96;
/// After EMFILE/ENFILE/ENOMEM on accept, accepting pauses this long instead of spinning.
pub const ACCEPT_PAUSE_MS: u64 = 200;

/// File descriptors accepted connections never take: while fewer than this many would
/// be left under RLIMIT_NOFILE, a new connection is refused and accepting pauses, so that
/// STATUS (/proc, the interfaces), a SIGHUP (token and key files), IDENTIFY (the LED) and
/// the beacon (its interfaces, its sockets) always have the fds they open for a moment.
pub const FD_RESERVE: u64 = 4;

/// Compile-time capacity of the client table (TCP and Unix clients together).
pub const MAX_CLIENTS: usize = 16;
/// Default for `--max-clients`.
pub const DEFAULT_MAX_CLIENTS: usize = MAX_CLIENTS;
/// How many `--listen` addresses the agent accepts.
pub const MAX_LISTENERS: usize = 4;
/// Default listen backlog (`--backlog`): small, as embedded servers have.
pub const DEFAULT_BACKLOG: u16 = 8;
/// The largest `--backlog` taken (Linux caps it at net.core.somaxconn, 4096 by default).
pub const BACKLOG_MAX: u16 = 4096;
/// Connections accepted from one listener in one turn, at most: whatever its accept queue
/// can hold (`--backlog` + 1), so the queue is drained every turn, but a flood that refills
/// it as fast as it is read cannot keep the loop from its other work.
pub const ACCEPTS_PER_TURN: usize = BACKLOG_MAX as usize + 1;
/// Default idle timeout in seconds (`--idle-timeout`).
pub const DEFAULT_IDLE_SECS: u32 = 60;
/// TCP keepalive when no idle timeout would close a vanished peer sooner (`--idle-timeout`
/// 0 or over [`KEEPALIVE_DEAD_SECS`], [`crate::sys::net::keepalive`]): the first probe
/// after this many idle seconds, then one every [`KEEPALIVE_INTERVAL_SECS`]; after
/// [`KEEPALIVE_PROBES`] unanswered the connection is dead.
pub const KEEPALIVE_IDLE_SECS: u32 = 60;
pub const KEEPALIVE_INTERVAL_SECS: u32 = 10;
pub const KEEPALIVE_PROBES: u32 = 6;
pub const KEEPALIVE_DEAD_SECS: u32 =
    KEEPALIVE_IDLE_SECS + KEEPALIVE_PROBES * KEEPALIVE_INTERVAL_SECS;
/// A control client whose replies wait is closed as one that stopped reading when it has
/// taken none of them for `--idle-timeout`, but never sooner than this: TCP shows a slow
/// reader's progress only when its window reopens (over loopback, every 64 KiB: one
/// segment), so a short idle timeout would cut off readers that are only slow. The
/// control port's [`HTTP_SEND_TIMEOUT_SECS`].
pub const REPLY_STALL_MIN_SECS: u64 = HTTP_SEND_TIMEOUT_SECS;

/// Fact table capacity and shapes.
pub const MAX_FACTS: usize = 32;
pub const KEY_MAX: usize = 32;
pub const VALUE_MAX: usize = 64;
/// Longest `ttl=` a fact may carry (one year).
pub const TTL_MAX_SECS: u32 = 365 * 24 * 3600;

/// AUTH token (`--token-file`): bytes after trimming white space, at most.
pub const TOKEN_MAX: usize = 128;
/// A shorter token is taken with a warning: an AUTH exchange seen on the LAN lets anyone
/// test guesses offline, as fast as they can compute HMACs.
pub const TOKEN_ADVISED_MIN: usize = 16;
/// Fleet key (`--fleet-key`): bytes after trimming white space, at least and at most.
pub const FLEET_KEY_MIN: usize = 16;
pub const FLEET_KEY_MAX: usize = 256;
/// White space a secret file (token, fleet key) may hold around its secret (a newline, a
/// CRLF, indentation) beyond the secret's own limit; a longer file is refused.
pub const SECRET_SLACK: usize = 64;
/// The buffer a secret file of at most `max` bytes is read into: room for its
/// [`SECRET_SLACK`] and one byte more, so that a file over both is told from one that
/// just fits.
pub const fn secret_buf_len(max: usize) -> usize {
    max + SECRET_SLACK + 1
}
/// A client that failed AUTH has its next line held back this long.
pub const AUTH_FAIL_DELAY_MS: u64 = 1000;
/// Across all clients of one transport (TCP, the Unix socket), at most this many failed
/// AUTHs are checked in any second; beyond it AUTH answers `ERR busy` without comparing.
pub const AUTH_FAILS_PER_SEC: usize = 5;
/// A challenge nonce (`AUTH` alone) is valid this long, once, on its own connection.
pub const AUTH_NONCE_SECS: u64 = 30;
/// Random bytes in a challenge nonce (sent as twice as many lowercase hex digits).
pub const AUTH_NONCE_BYTES: usize = 16;

/// Beacon datagram and probe size (both directions), in bytes.
pub const DATAGRAM_MAX: usize = 512;
/// Longest probe nonce echoed back in an answer.
pub const NONCE_MAX: usize = 64;
/// `tether scan`: rows it keeps, at most (a LAN flooded with made-up ids cannot grow it
/// without bound; datagrams of further boards are counted and said in one warning).
pub const SCAN_BOARDS_MAX: usize = 1024;
/// `tether scan --fleet-key`: signed (id, run, address) seq entries it remembers, at most:
/// four per row (a board's IPv4 and IPv6 addresses, a restart or two within
/// [`SCAN_FORGET_SECS`]). Only the key's holders add them; when full, the one heard
/// longest ago goes (a copy of that run is then judged by the other rules).
pub const SCAN_SEQS_MAX: usize = 4 * SCAN_BOARDS_MAX;
/// `tether scan`: rows of one id and trust class, at most: boards cloned from one SD-card
/// image share an id (a lab of a few hundred is possible, and each is listed); past this a
/// datagram of a further run of that id is ignored and counted, so no datagram of one id
/// is compared with more rows than this.
pub const SCAN_RUNS_PER_ID: usize = 256;
/// `tether scan`: an address of a board not heard this long, while the board was heard at
/// another, is dropped from its row (renumbered by DHCP, a link gone). An agent beacons on
/// all its links at once and answers each probe on each, so a live address is heard with
/// the others.
pub const SCAN_ADDR_STALE_SECS: u64 = 60;
/// `tether scan`: addresses one row lists, at most (a board on four links, each over both
/// families); further ones are not added.
pub const SCAN_ADDRS_MAX: usize = 8;
/// `tether scan --watch`: a board silent this long is dropped from the listing (the
/// service runs for months; boards are re-imaged, renumbered, retired).
pub const SCAN_FORGET_SECS: u64 = 600;
/// `tether scan`: a beacon's load is believed up to this bound; a value above (or not a
/// finite number) shows as unknown.
pub const SCAN_LOAD_MAX: f64 = 1e6;
/// A temperature in °C is believed within these bounds, by the agent reading `--thermal`
/// and by `tether scan` reading a beacon; outside, it is unknown.
pub const TEMP_C_RANGE: (f64, f64) = (-273.15, 1000.0);
/// Default beacon port and interval.
pub const DEFAULT_BEACON_PORT: u16 = 4546;
pub const DEFAULT_INTERVAL_SECS: u32 = 5;
/// Bounds for `--interval` and `INTERVAL n`.
pub const INTERVAL_MIN_SECS: u32 = 1;
pub const INTERVAL_MAX_SECS: u32 = 3600;
/// Probe answers: a token bucket of this many replies, refilled at this rate per second.
pub const PROBE_BURST: u32 = 8;
pub const PROBE_PER_SEC: u32 = 4;
/// Each probe answer waits a random 1..=this many ms (RFC 6762 §6), so a LAN full of
/// boards does not answer a scan in the same instant.
pub const PROBE_ANSWER_DELAY_MAX_MS: u64 = 250;
/// Probe answers waiting for their delay, per interface: the bucket's burst and the few
/// tokens it regains within one delay.
pub const PROBE_PENDING_MAX: usize = PROBE_BURST as usize + 2;
/// How many `--iface` beacon interfaces the agent accepts.
pub const MAX_BEACON_IFACES: usize = 4;
/// Datagrams read per readable beacon socket per loop turn, in the agent and in `tether
/// scan` (a flood costs bounded work, and the clock is looked at again after each batch).
pub const BEACON_RECV_PER_TURN: usize = 32;
/// `tether scan` asks for this receive buffer (SO_RCVBUF, SO_RCVBUFFORCE when permitted):
/// room for a thousand full-size answers arriving at once.
pub const SCAN_RCVBUF: usize = 4 * 1024 * 1024;
/// Probes `tether scan` sends within its window (at the start, then spread over the
/// first half), so a board whose answer or probe was lost still answers.
pub const SCAN_PROBES: u32 = 3;

/// IDENTIFY: default and longest blink, and the half-period of the blink.
pub const IDENTIFY_DEFAULT_SECS: u32 = 15;
pub const IDENTIFY_MAX_SECS: u32 = 3600;
pub const IDENTIFY_HALF_PERIOD_MS: u64 = 250;

/// Interface names (IFNAMSIZ - 1) and how many addresses STATUS lists.
pub const IFNAME_MAX: usize = 15;
/// The kernel's IFNAMSIZ: an interface name with its NUL, as SO_BINDTODEVICE reads back.
pub const IFNAMSIZ: usize = IFNAME_MAX + 1;
/// The last beacon socket error kept for STATUS (`last_error`), cut at a char boundary.
pub const BEACON_ERROR_MAX: usize = 96;
pub const MAX_ADDRS: usize = 16;
/// Longest hostname we report (HOST_NAME_MAX).
pub const HOST_MAX: usize = 64;
/// A name the kernel holds as bytes (host, interface), as text to show: each byte that is
/// not UTF-8 becomes U+FFFD, three bytes ([`crate::sys::push_lossy`]), so the text takes
/// up to three times the name's bytes and no name is cut.
pub const SHOWN_FACTOR: usize = 3;
pub const HOST_SHOWN_MAX: usize = SHOWN_FACTOR * HOST_MAX;
pub const IFNAME_SHOWN_MAX: usize = SHOWN_FACTOR * IFNAME_MAX;
/// The board's small /proc and /sys files (the start of meminfo, `--thermal`) are read
/// into a stack buffer this big; only meminfo is longer, and the line read from it
/// (MemAvailable) comes in its first 200 bytes.
pub const PROC_READ_MAX: usize = 2048;
/// The longest line of /proc/net/if_inet6 or /proc/net/dev the agent reads (in chunks of
/// twice this); a longer one is skipped. An if_inet6 line is at most 32 + 4 * 3 + 1 + 15
/// bytes, a /proc/net/dev line 6 + 1 + 16 * 21 (every counter at its widest).
pub const PROC_LINE_MAX: usize = 512;
/// Longest path of a file the agent opens after start-up (`--thermal`, `--led` and the files
/// inside an LED directory; `--token-file` and `--fleet-key`, re-read on SIGHUP). std opens
/// a path shorter than 384 bytes through a C string on the stack and allocates for a longer
/// one, on every read; this leaves room for `/max_brightness` inside an `--led` directory.
pub const FILE_PATH_MAX: usize = 360;
/// Longest Unix socket path (sun_path minus the NUL).
pub const SOCK_PATH_MAX: usize = 107;
/// How much [`crate::proto::json::write_str`] lengthens what it escapes, per input byte, at
/// worst, by what the input may hold (`proto::json::tests::escape_factors_are_the_worst`
/// measures every character and every byte that is not UTF-8):
/// - any bytes (a name read from the kernel: host and interface names may hold control
///   characters and bytes that are not UTF-8): a control byte is `\u0001`, a byte that is
///   not UTF-8 `\ufffd`, 6 bytes each;
pub const JSON_ESCAPE_MAX_FACTOR: usize = 6;
/// - text without a control character ([`crate::sys::shows_as_is`]: Unix socket paths,
///   `--iface` names): a 2-byte character such as `é` is `\u00e9` (3 times its bytes), a
///   4-byte one a surrogate pair `\ud83d\ude00` (3 times), a 3-byte one 6 bytes (twice),
///   `"` and `\` twice;
pub const JSON_ESCAPE_TEXT_MAX_FACTOR: usize = 3;
/// - printable ASCII (fact keys and values, error texts): `"` and `\` are twice.
pub const JSON_ESCAPE_ASCII_MAX_FACTOR: usize = 2;
/// How much [`crate::proto::prom::label_value`] lengthens a label value, per input byte, at
/// worst: any bytes, 3 (a byte that is not UTF-8 is U+FFFD, written as its 3 bytes); UTF-8
/// text (every name the agent holds as a `String`), 2 (`\`, `"` and a line feed; any other
/// character is written as it is). `proto::prom::tests::escape_factors_are_the_worst`.
pub const PROM_ESCAPE_MAX_FACTOR: usize = 3;
pub const PROM_ESCAPE_TEXT_MAX_FACTOR: usize = 2;

/// One SOCKETS item of a Unix socket at its widest: keys, the longest kind, two buffer
/// sizes (C ints, sign included) and `"device":null` in 128 bytes, and a path of
/// [`SOCK_PATH_MAX`] bytes escaped at worst: every Unix socket path the agent binds is UTF-8
/// without a control character (`cli::sock_path`, `sys::unix::shows_cleanly`), so
/// [`JSON_ESCAPE_TEXT_MAX_FACTOR`] (`/` and 53 `é`: 321 bytes with its quotes). Any other
/// item (a listener, a TCP client, a beacon socket, a beacon interface with none): keys,
/// kind and state in 128 bytes, an IPv6 address with scope and port (58) and the device
/// escaped at worst: the name SO_BINDTODEVICE reads back is the kernel's current name of the
/// interface, which a rename may have made any bytes ([`JSON_ESCAPE_MAX_FACTOR`]).
/// `proto::sockets::tests::items_fit_their_bounds` proves both.
pub const SOCKETS_UNIX_ITEM_MAX: usize = 128 + 2 + JSON_ESCAPE_TEXT_MAX_FACTOR * SOCK_PATH_MAX;
pub const SOCKETS_NET_ITEM_MAX: usize =
    128 + INET_ADDR_TEXT_MAX + 2 + JSON_ESCAPE_MAX_FACTOR * IFNAME_MAX;
/// An IPv6 socket address as text at its widest: `[` 39 hex digits and colons `%` a
/// 10-digit scope id `]:65535`.
pub const INET_ADDR_TEXT_MAX: usize = 1 + 39 + 1 + 10 + 1 + 6;
/// A socket's own address as SOCKETS shows it: a Unix path or an IP socket address.
pub const SOCKET_ADDR_TEXT_MAX: usize = if SOCK_PATH_MAX > INET_ADDR_TEXT_MAX {
    SOCK_PATH_MAX
} else {
    INET_ADDR_TEXT_MAX
};
/// The whole SOCKETS reply, `OK {"sockets":[...]}\n`, with every socket there can be: the
/// Unix listener, the publish socket and every client a Unix one; the TCP and HTTP
/// listeners and two sockets per beacon interface.
pub const SOCKETS_REPLY_MAX: usize = "OK {\"sockets\":[".len()
    + "]}\n".len()
    + (2 + MAX_CLIENTS) * (SOCKETS_UNIX_ITEM_MAX + 1)
    + (MAX_LISTENERS + MAX_METRICS_LISTENERS + 2 * MAX_BEACON_IFACES) * (SOCKETS_NET_ITEM_MAX + 1);
/// The board id as reported (STATUS, beacon): at most this many characters.
pub const ID_MAX: usize = 32;

/// STATUS at its widest, `\n` included: the keys, version and numbers (u64s, and floats at
/// f32's widest: 39 digits) in [`STATUS_FIXED_MAX`]; the id and the host name escaped at
/// worst (the kernel's host name may hold control characters: [`JSON_ESCAPE_MAX_FACTOR`]);
/// every address ([`STATUS_ADDR_MAX`]), the `beacon` and each of `beacons`
/// ([`STATUS_BEACON_MAX`]) and every fact ([`STATUS_FACT_MAX`]).
/// `agent::tests::status_at_its_widest_fits` proves it.
pub const STATUS_REPLY_MAX: usize = STATUS_FIXED_MAX
    + 2
    + JSON_ESCAPE_MAX_FACTOR * ID_MAX
    + 2
    + JSON_ESCAPE_MAX_FACTOR * HOST_MAX
    + MAX_ADDRS * STATUS_ADDR_MAX
    + (MAX_BEACON_IFACES + 1) * STATUS_BEACON_MAX
    + MAX_FACTS * STATUS_FACT_MAX;
pub const STATUS_FIXED_MAX: usize = 1024;
/// `{"iface":..,"addr":".."},` with the longest IPv6 address and an interface name as the
/// kernel has it, so escaped at worst ([`JSON_ESCAPE_MAX_FACTOR`]: `ip link` takes a
/// control character or a byte that is not UTF-8 in a name).
pub const STATUS_ADDR_MAX: usize = 32 + 39 + JSON_ESCAPE_MAX_FACTOR * IFNAME_MAX;
/// One beacon interface: keys, the longest state and numbers in 128 bytes, an `--iface`
/// name ([`crate::sys::iface::valid_name`]: no control character,
/// [`JSON_ESCAPE_TEXT_MAX_FACTOR`]) and the last error (ASCII) escaped.
pub const STATUS_BEACON_MAX: usize = 128
    + JSON_ESCAPE_TEXT_MAX_FACTOR * IFNAME_MAX
    + JSON_ESCAPE_ASCII_MAX_FACTOR * BEACON_ERROR_MAX;
/// One fact, `"key":"value",`: a key is `A-Z a-z 0-9 _ . -`, which JSON writes as it is; a
/// value printable ASCII ([`JSON_ESCAPE_ASCII_MAX_FACTOR`]).
pub const STATUS_FACT_MAX: usize = KEY_MAX + JSON_ESCAPE_ASCII_MAX_FACTOR * VALUE_MAX + 6;

/// IDENTIFY LED (`--led`): the "on" brightness written, a saved trigger name and a saved
/// brightness, in bytes; and the most read from an LED file at a time (the trigger list
/// is read in pieces of this size).
pub const LED_ON_MAX: usize = 8;
/// At start, how long `--led` may take to become writable (the LED rule's `chgrp` runs
/// while udev works through its boot-time events, maybe after the agent starts) before it
/// is a configuration error (exit 78, which the unit does not retry).
pub const LED_WAIT_MS: u64 = 5000;
pub const LED_TRIGGER_MAX: usize = 32;
pub const LED_BRIGHTNESS_MAX: usize = 16;
pub const LED_READ_MAX: usize = 512;

/// Prometheus metrics over HTTP (`--metrics ADDR`, issue 9).
/// How many `--metrics` addresses the agent accepts.
pub const MAX_METRICS_LISTENERS: usize = 2;
/// Port used when `--metrics` is given an address without one. The exporters' range
/// 9100-9999 is fully allocated on Prometheus's port list; 9545 echoes the control port 4545.
pub const DEFAULT_METRICS_PORT: u16 = 9545;
/// HTTP clients have their own slot table, apart from the control port's [`MAX_CLIENTS`].
pub const HTTP_SLOTS: usize = 4;
/// Reads per HTTP connection per turn (as [`READS_PER_TURN`] for control clients).
pub const HTTP_READS_PER_TURN: usize = 8;
/// Longest HTTP request head (request line + headers + blank line); more gets 431.
pub const HTTP_HEAD_MAX: usize = 2048;
/// A request head must be complete this long after the connection opened or its first byte.
pub const HTTP_HEAD_TIMEOUT_SECS: u64 = 5;
/// A new HTTP connection that finds every slot taken may take the slot of one whose request
/// head has not come, not a byte of it or not all of it, this long after that head's clock
/// started (the connection, or the head's first byte: the clock of
/// [`HTTP_HEAD_TIMEOUT_SECS`]), or whose peer has taken nothing of its response for as
/// long, the oldest first. A scraper sends its request as soon as it is connected, and a
/// LAN delivers it within one retransmit (200 ms at least), so only a peer that holds a
/// slot without asking (or asks without reading) loses it: silent (slowloris) connections
/// no longer shut scrapes out. Within the grace a head gives its slot up only when every
/// other slot is busy or in its grace too (the oldest first).
pub const HTTP_HEAD_GRACE_MS: u64 = 500;
/// A kept-alive connection waiting for its next request is closed after this long (and
/// sooner when its slot is needed for a new connection). Longer than Prometheus's own idle
/// timeout for its connections (5 min): the scraper closes first, so a scrape every minute
/// (its default interval) never races the agent's close.
pub const HTTP_KEEPALIVE_SECS: u64 = 360;
/// A client that does not read its response within this long is closed.
pub const HTTP_SEND_TIMEOUT_SECS: u64 = 10;
/// Room for the response head: status line, Content-Type, Content-Length, Connection, Allow.
pub const HTTP_RESP_HEAD_MAX: usize = 256;
/// One `tether_fact_info{key="K",value="V"} 1` line at worst: every key and value byte
/// escaped (a value of printable ASCII can hold `\` and `"`, which escape to two bytes).
pub const METRICS_FACT_LINE_MAX: usize = "tether_fact_info{key=\"".len()
    + PROM_ESCAPE_TEXT_MAX_FACTOR * KEY_MAX
    + "\",value=\"".len()
    + PROM_ESCAPE_TEXT_MAX_FACTOR * VALUE_MAX
    + "\"} 1\n".len();
/// Everything but the fact lines: HELP/TYPE of every family, the other samples with u64
/// values at their widest, and the build_info labels (host and id escaped at worst: the
/// host as any bytes, [`PROM_ESCAPE_MAX_FACTOR`], though it is held as UTF-8 already; the
/// id). The 256: the publish counters. `metrics::tests::fixed_part_fits` proves the bound.
/// Plus `tether_beacon_iface_state` (3 states per interface) and
/// `tether_beacon_iface_sequence` (one u64 per interface, HELP and TYPE 128), the name
/// (UTF-8 text, [`PROM_ESCAPE_TEXT_MAX_FACTOR`]) escaped at worst. Plus 256 for
/// `tether_log_lines_dropped_total`.
pub const METRICS_FIXED_MAX: usize = 6144
    + 256
    + 256
    + PROM_ESCAPE_MAX_FACTOR * HOST_MAX
    + PROM_ESCAPE_TEXT_MAX_FACTOR * ID_MAX
    + MAX_BEACON_IFACES * 3 * (56 + PROM_ESCAPE_TEXT_MAX_FACTOR * IFNAME_MAX)
    + 256
    + 128
    + MAX_BEACON_IFACES * (64 + PROM_ESCAPE_TEXT_MAX_FACTOR * IFNAME_MAX);
/// The largest `/metrics` body: a full fact table of maximum-length keys and values that
/// all need escaping, plus the fixed part.
pub const METRICS_BODY_MAX: usize = METRICS_FIXED_MAX + MAX_FACTS * METRICS_FACT_LINE_MAX;
/// Per HTTP slot response buffer: the head and the largest body.
pub const HTTP_RESP_MAX: usize = HTTP_RESP_HEAD_MAX + METRICS_BODY_MAX;

/// The publish socket (`--publish`, a Unix datagram socket): datagrams read per loop
/// turn, so a flood never starves the control port (the rest wait for the next turn).
pub const PUBLISH_PER_TURN: usize = 32;
/// Debug lines a peer causes one per datagram (publish datagrams, dropped probes and
/// garbage on the beacon port): at most this many per second per source of them (the rest
/// are counted and the count is logged with the next line, `lograte`).
pub const DEBUG_LINES_PER_SEC: u32 = 10;
/// Receive buffer for one publish datagram: a maximal line, `\r\n`, and one byte more
/// so an oversized datagram is seen as such (MSG_TRUNC) and refused.
pub const PUBLISH_DGRAM_MAX: usize = LINE_MAX + 2;

/// `--rcvbuf` / `--sndbuf` bounds, in bytes (what the user asks; Linux reports twice that).
pub const SOCKBUF_MIN: u32 = 1024;
pub const SOCKBUF_MAX: u32 = 4 * 1024 * 1024;

/// Operator warnings that repeat while a condition lasts (a socket error, accepts paused,
/// a growing count) are said again after this many seconds, then after twice as long each
/// time, up to [`WARN_MAX_SECS`] ([`crate::lograte::Repeat`]): an error that never clears
/// is said 29 times in its first day and 24 a day after that, not 1,440.
pub const WARN_EVERY_SECS: u64 = 60;
pub const WARN_MAX_SECS: u64 = 3_600;
/// A beacon interface's changes of state are said at most this many times per
/// [`FLAP_WINDOW_SECS`]; a link that flaps faster writes how many changes it left out.
pub const FLAP_LINES: u32 = 4;
pub const FLAP_WINDOW_SECS: u64 = 600;

/// One piece of a text that spells out limits: see [`crate::limit_text`].
pub enum Piece {
    S(&'static str),
    N(u64),
}

const fn digits(mut n: u64) -> usize {
    let mut d = 1;
    while n >= 10 {
        n /= 10;
        d += 1;
    }
    d
}

/// The length of the text [`text_bytes`] writes.
pub const fn text_len(p: &[Piece]) -> usize {
    let (mut i, mut len) = (0, 0);
    while i < p.len() {
        len += match p[i] {
            Piece::S(s) => s.len(),
            Piece::N(n) => digits(n),
        };
        i += 1;
    }
    len
}

/// The pieces as one text (numbers in decimal), at compile time.
pub const fn text_bytes<const L: usize>(p: &[Piece]) -> [u8; L] {
    let mut out = [0u8; L];
    let (mut i, mut at) = (0, 0);
    while i < p.len() {
        match p[i] {
            Piece::S(s) => {
                let b = s.as_bytes();
                let mut k = 0;
                while k < b.len() {
                    out[at] = b[k];
                    at += 1;
                    k += 1;
                }
            }
            Piece::N(mut n) => {
                let d = digits(n);
                let mut k = d;
                while k > 0 {
                    out[at + k - 1] = b'0' + (n % 10) as u8;
                    n /= 10;
                    k -= 1;
                }
                at += d;
            }
        }
        i += 1;
    }
    out
}

/// A `&'static str` built at compile time from string literals and `{limits}`, so that
/// error texts never spell a limit by hand:
/// `limit_text!("line exceeds ", {LINE_MAX}, " bytes")` is `"line exceeds 255 bytes"`.
#[macro_export]
macro_rules! limit_text {
    (@p [$($acc:tt)*]) => { &[$($acc)*] };
    (@p [$($acc:tt)*] $s:literal $(, $($rest:tt)*)?) => {
        $crate::limit_text!(@p [$($acc)* $crate::limits::Piece::S($s),] $($($rest)*)?)
    };
    (@p [$($acc:tt)*] {$n:expr} $(, $($rest:tt)*)?) => {
        $crate::limit_text!(@p [$($acc)* $crate::limits::Piece::N($n as u64),] $($($rest)*)?)
    };
    ($($t:tt)*) => {{
        const P: &[$crate::limits::Piece] = $crate::limit_text!(@p [] $($t)*);
        const L: usize = $crate::limits::text_len(P);
        const B: [u8; L] = $crate::limits::text_bytes::<L>(P);
        match core::str::from_utf8(&B) {
            Ok(s) => s,
            Err(_) => panic!("limit_text: not UTF-8"),
        }
    }};
}

const _: () = assert!(IN_BUF >= LINE_MAX + 2);
const _: () = assert!(OUT_BUF >= REPLY_MAX);
const _: () = assert!(DEFAULT_MAX_CLIENTS <= MAX_CLIENTS);
const _: () = assert!(REPLY_MAX >= STATUS_REPLY_MAX);
const _: () = assert!(REPLY_MAX >= SOCKETS_REPLY_MAX);
const _: () = assert!(DATAGRAM_MAX >= 256);
const _: () = assert!(PROBE_PENDING_MAX > PROBE_BURST as usize);
const _: () = assert!(NONCE_MAX + 16 < DATAGRAM_MAX);
const _: () = assert!(PROBE_ANSWER_DELAY_MAX_MS <= 250);
const _: () = assert!(PUBLISH_DGRAM_MAX == IN_BUF && PUBLISH_PER_TURN >= 1);
const _: () = assert!(SOCKBUF_MIN < SOCKBUF_MAX && SOCKBUF_MAX <= i32::MAX as u32 / 2);
const _: () = assert!(
    METRICS_FACT_LINE_MAX
        == 22
            + PROM_ESCAPE_TEXT_MAX_FACTOR * KEY_MAX
            + 9
            + PROM_ESCAPE_TEXT_MAX_FACTOR * VALUE_MAX
            + 5
);
const _: () = assert!(HTTP_RESP_MAX >= HTTP_RESP_HEAD_MAX + METRICS_BODY_MAX);
const _: () = assert!(HTTP_RESP_MAX <= 32 * 1024);
const _: () = assert!(HTTP_HEAD_MAX >= 256);
const _: () = assert!(HTTP_HEAD_GRACE_MS < HTTP_HEAD_TIMEOUT_SECS * 1000);
const _: () = assert!(DEFAULT_METRICS_PORT >= 9100 && DEFAULT_METRICS_PORT <= 9999);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limit_text_spells_the_numbers() {
        const T: &str = crate::limit_text!("line exceeds ", { LINE_MAX }, " bytes");
        assert_eq!(T, "line exceeds 255 bytes");
        assert_eq!(
            crate::limit_text!({ 0 }, "-", { u64::MAX }),
            "0-18446744073709551615"
        );
        assert_eq!(crate::limit_text!("a", { 7 }), "a7");
    }
}
