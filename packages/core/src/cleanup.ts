/**
 * Process-exit cleanup: no VM process may outlive the host process. Every live VM registers a
 * synchronous kill function; on `exit` (normal exit, process.exit, uncaught exception) and on
 * SIGINT/SIGTERM/SIGHUP every registered VM is SIGKILLed and its runtime dir removed. (A SIGKILL of Node
 * itself cannot run handlers: the backends start QEMU with a parent-death signal for that case.)
 */

import { markExitCleanupListener, onlyExitCleanupListeners } from "@supermachine/hypervisor";

type Killer = () => void;

const live = new Map<number, Killer>();
let nextId = 1;
let installed = false;

function killAll(): void {
  for (const [id, kill] of live) {
    live.delete(id);
    try {
      kill();
    } catch {
      /* best effort at exit */
    }
  }
}

const KEEPS_VMS = Symbol.for("supermachine.signal-listener-keeps-vms");

/**
 * Mark an application signal listener that stops the VMs itself (the CLI forwards Ctrl-C to the
 * guest's workload and then shuts its pool down): while such a listener is installed, that signal
 * does not kill the VMs here; process exit still does. Returns the listener.
 */
export function keepVmsOnSignal<F extends (...args: never[]) => unknown>(listener: F): F {
  (listener as unknown as Record<symbol, unknown>)[KEEPS_VMS] = true;
  return listener;
}

function onSignal(signal: NodeJS.Signals): void {
  if (process.listeners(signal).some((l) => (l as unknown as Record<symbol, unknown>)[KEEPS_VMS])) return;
  killAll();
  // Keep the default behaviour (terminate with the signal) unless the application handles it too.
  if (onlyExitCleanupListeners(signal)) {
    uninstall();
    process.kill(process.pid, signal);
  }
}
markExitCleanupListener(onSignal);

const SIGNALS: NodeJS.Signals[] = ["SIGINT", "SIGTERM", "SIGHUP"];

function install(): void {
  if (installed) return;
  installed = true;
  process.on("exit", killAll);
  for (const s of SIGNALS) process.on(s, onSignal);
}

function uninstall(): void {
  if (!installed) return;
  installed = false;
  process.off("exit", killAll);
  for (const s of SIGNALS) process.off(s, onSignal);
}

/** Register a synchronous killer; returns the unregister function. */
export function registerForCleanup(kill: Killer): () => void {
  install();
  const id = nextId++;
  live.set(id, kill);
  return () => {
    live.delete(id);
    if (live.size === 0) uninstall();
  };
}

/** For tests: how many VMs are registered. */
export function liveCount(): number {
  return live.size;
}
