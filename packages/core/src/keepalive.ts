/**
 * Programs exit when their work is done. Every resource of a VM (the QEMU process and its pipes, the
 * QMP and agent sockets, housekeeping timers) is unref'd, so an idle pool — and the bake VM parked
 * for a warm handoff — never keeps Node's event loop alive. While a user operation is in flight
 * (build, acquire, exec, spawn and the life of its process, readFile, ...) a hold keeps one ref'd
 * timer, so awaiting it never ends the process early. VMs still never outlive the process: the exit
 * hooks (cleanup.ts, and the hypervisor's own) kill them when it exits.
 */

/** Long enough to be free, short enough to be a valid Node timer. */
const KEEPALIVE_INTERVAL_MS = 60 * 60 * 1000;

let holds = 0;
/** One interval for the life of the process, ref'd only while some hold exists (ref/unref is cheap;
 * creating and clearing a timer per operation cost tens of µs on the acquire path). */
let timer: NodeJS.Timeout | undefined;

/** Keep the event loop alive until the returned function is called (idempotent). */
export function hold(): () => void {
  if (holds++ === 0) {
    timer ??= setInterval(() => {}, KEEPALIVE_INTERVAL_MS);
    timer.ref();
  }
  let released = false;
  return () => {
    if (released) return;
    released = true;
    if (--holds === 0) timer?.unref();
  };
}

/** Run `fn` under a hold (released when its promise settles). */
export function whileHeld<T>(fn: () => Promise<T>): Promise<T> {
  const release = hold();
  try {
    return fn().finally(release);
  } catch (err) {
    release();
    return Promise.reject(err);
  }
}

/** For tests: the number of operations holding the event loop. */
export function holdCount(): number {
  return holds;
}
