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

function onSignal(signal: NodeJS.Signals): void {
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
