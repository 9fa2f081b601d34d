/** Timeouts and limits of the QEMU driver. Every duration carries its unit in the name. */

/** Version of the backend contract (`VmmBackend.version`). Bump on incompatible change. */
export const BACKEND_CONTRACT_VERSION = 1 as const;

/** Format version of a snapshot directory's `vm.json`. */
export const SNAPSHOT_FORMAT_VERSION = 1 as const;

/** How long to wait for QEMU to create its QMP socket and answer the greeting. */
export const QMP_CONNECT_TIMEOUT_MS = 10_000;
/** Default deadline of one QMP command (migration waits have their own). */
export const QMP_COMMAND_TIMEOUT_MS = 10_000;
/** Deadline for an outgoing/incoming migration (snapshot / restore state load). */
export const MIGRATION_TIMEOUT_MS = 120_000;
/** Migration bandwidth cap for snapshots (QEMU's default is 128 MiB/s, meant for live migration over a network). */
export const MIGRATION_MAX_BANDWIDTH_BYTES_PER_S = 64 * 1024 * 1024 * 1024;
/** Polling interval for `query-migrate` while waiting for a migration. */
export const MIGRATION_POLL_MS = 2;

/** stop(): time given to the guest shutdown hook (e.g. the agent's `shutdown` RPC) to power off. */
export const STOP_GUEST_SHUTDOWN_TIMEOUT_MS = 3_000;
/** stop(): time given to QEMU to exit after QMP `quit`. */
export const STOP_QMP_QUIT_TIMEOUT_MS = 2_000;
/** stop(): time given to QEMU to exit after SIGTERM before SIGKILL. */
export const STOP_SIGTERM_TIMEOUT_MS = 2_000;
/** stop(): time to wait for the reaped exit after SIGKILL (should be immediate). */
export const STOP_SIGKILL_TIMEOUT_MS = 5_000;

/** Bytes of QEMU stderr kept for error messages. */
export const STDERR_RING_BYTES = 16 * 1024;
/** Console lines quoted in SM_GUEST_CRASHED messages. */
export const CONSOLE_TAIL_LINES = 30;
/**
 * The serial console log is trimmed once it holds more than this: a guest (root in it can write
 * /dev/ttyS0 or /dev/kmsg) must not fill the host's /dev/shm. The last CONSOLE_KEEP_BYTES are kept.
 */
export const CONSOLE_MAX_BYTES = 1024 * 1024;
export const CONSOLE_KEEP_BYTES = 64 * 1024;
/** How often the console log's size is checked. */
export const CONSOLE_CHECK_MS = 500;

/** KVM probe: a tiny real boot must reach the kernel's "no init" panic within this time. */
export const KVM_PROBE_TIMEOUT_MS = 15_000;

/** Page size used for sparse memory copies. */
export const PAGE_BYTES = 4096;
