/**
 * Protocol constants. Every value carries its unit in the comment and points at the section of
 * SPEC.md that defines it (SPEC.md section 10 lists them all).
 */

/** Protocol version spoken by this implementation (SPEC §4, §11). */
export const PROTOCOL_VERSION = 1;
/** Largest frame body either side accepts, bytes (5 MiB). Also the pre-handshake limit (SPEC §1, §4.3). */
export const MAX_FRAME = 5_242_880;
/** Smallest maxFrame a peer may announce, bytes (SPEC §4.3). */
export const MIN_MAX_FRAME = 1_048_576;
/** Length prefix size, bytes (SPEC §1). */
export const FRAME_HEADER_BYTES = 4;
/** Default per-channel, per-direction receive window, bytes (SPEC §4.3). */
export const DEFAULT_WINDOW = 262_144;
/** Smallest window a peer may announce, bytes (SPEC §4.3). */
export const MIN_WINDOW = 65_536;
/** Largest window a peer may announce, bytes (SPEC §4.3). */
export const MAX_WINDOW = 16_777_216;
/** Bytes reserved for the data frame's envelope: d may be at most maxFrame - DATA_OVERHEAD (SPEC §8.4). */
export const DATA_OVERHEAD = 64;
/** Largest data chunk we send in one frame, bytes (SPEC §8.4). */
export const DATA_CHUNK_MAX = 262_144;
/** Host hello resend period, ms (SPEC §4.1). */
export const HELLO_RESEND_MS = 200;
/** Default host handshake timeout, ms (SPEC §4.1). */
export const HELLO_TIMEOUT_MS = 10_000;
/** How long the host lets the transport flush its `fatal` frame before destroying it, ms (SPEC §9.2). */
export const FATAL_LINGER_MS = 1000;
/** Maximum array/map nesting, levels; the frame's map is level 1 (SPEC §2). */
export const MAX_DEPTH = 16;
/** Maximum entries in one array or pairs in one map (SPEC §2). */
export const MAX_CONTAINER_ITEMS = 65_536;
/** Maximum outstanding requests per session (SPEC §5). */
export const MAX_PENDING_REQUESTS = 1024;
/** write-file / read-file payload cap, bytes (4 MiB) (SPEC §6.3). */
export const FILE_MAX = 4_194_304;
/** Per-stream tail size the exec result may carry, bytes (SPEC §6.1). */
export const EXEC_RESULT_MAX = 1_048_576;
/** Recommended agent-side exec buffer per stream, bytes (SPEC §6.1). */
export const EXEC_TAIL_MAX = 65_536;
/** resume entropy bounds, bytes (SPEC §6.3). */
export const ENTROPY_MIN = 32;
export const ENTROPY_MAX = 512;
/** argv / env / stage entry limits (SPEC §6). */
export const ARGV_MAX = 4096;
export const ENV_MAX = 4096;
export const STAGE_MAX = 1024;
/** Longest argv entry, bytes (SPEC §6). */
export const ARG_BYTES_MAX = 131_072;
/** Longest guest path, bytes (SPEC §6). */
export const PATH_MAX = 4096;
/** Longest `message` text, bytes (SPEC §3). */
export const MESSAGE_MAX = 4096;
/** Longest `code` / `op` / `ev` / caps entry text, bytes (SPEC §3). */
export const NAME_MAX = 64;
/** Longest version text (`host` / `agent`), bytes (SPEC §3). */
export const VERSION_TEXT_MAX = 256;
/** Maximum caps entries (SPEC §3). */
export const CAPS_MAX = 64;
/** Largest uint32 (request and channel ids) (SPEC §2). */
export const UINT32_MAX = 4_294_967_295;
/** Largest boot config file, bytes (SPEC §12). */
export const CONFIG_MAX = 1_048_576;
/** Longest share tag, bytes; tags are [A-Za-z0-9._-], not "." or ".." (SPEC §6.4). */
export const FS_TAG_MAX = 35;
/** Shares attached at once per guest (SPEC §6.4). */
export const FS_MAX_SHARES = 16;
/** The agent's /dev/fuse read buffer, bytes (128 KiB + 4 KiB): the longest FUSE request (SPEC §6.4). */
export const FS_REQ_BUF = 135_168;
/** Longest FUSE reply or notification message the host may send on a share channel, bytes (SPEC §6.4). */
export const FS_REPLY_MAX = 135_168;
/** FUSE requests awaiting a reply per share; the agent stops reading /dev/fuse at this count (SPEC §6.4). */
export const FS_MAX_OUTSTANDING = 256;
/** Largest max_write the host may put in its FUSE_INIT reply, bytes (SPEC §6.4). */
export const FS_MAX_WRITE = 131_072;
/** Longest DNS query the agent forwards in a `dns` event, bytes (SPEC §6.5). */
export const EGRESS_DNS_QUERY_MAX = 512;
/** Longest DNS answer the host may send with `dns-answer`, bytes (SPEC §6.5). */
export const EGRESS_DNS_ANSWER_MAX = 4096;
/** Connects the agent holds waiting for a `dial-answer`; more fail with EAGAIN at once (SPEC §6.5). */
export const EGRESS_MAX_DIALS = 128;
