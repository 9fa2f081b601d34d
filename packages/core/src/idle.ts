/**
 * Idle pausing of pooled VMs (README "Idle pooled VMs"): a VM that sits idle in a pool has its vCPUs
 * stopped (QMP `stop`), so it costs no CPU. At acquire the handle is returned at once and the wake runs
 * concurrently: vCPUs continued, then the agent's `resume {timeNs, entropy}` (the guest clock stood
 * still while paused). Every agent operation of the handle waits for the wake (gateAgent).
 *
 * SM_POOL_IDLE_PAUSE=0 turns pausing off (a bench/diagnostic switch: measures the before/after).
 */
import { randomBytes } from "node:crypto";
import type { AgentPort, LiveVmPort } from "./ports";

/** False when SM_POOL_IDLE_PAUSE=0 (bench/diagnostic switch); read when a pool starts. */
export function idlePauseEnabled(env: NodeJS.ProcessEnv = process.env): boolean {
  const v = env.SM_POOL_IDLE_PAUSE;
  return !(v === "0" || v === "false" || v === "off");
}

/** The wall clock as the agent's `resume` wants it (unix epoch, ns). */
export function nowNs(): bigint {
  return BigInt(Date.now()) * 1_000_000n + BigInt(process.hrtime()[1] % 1_000_000);
}

/**
 * The pause state of one pooled VM. Transitions (pause, wake) run one after the other on a chain, so a
 * wake asked while a pause is still under way continues the vCPUs after that pause.
 */
export class IdleVm {
  /** True while the vCPUs are stopped or a pause is under way (and no wake asked since). */
  paused = false;
  /** Checked out by a caller (no pause is started while true). */
  checkedOut = false;
  /** The wake under way, until its resume frame is sent: agent operations wait for it (undefined: none). */
  waking: Promise<void> | undefined;
  #chain: Promise<void> = Promise.resolve();
  /** The last pause succeeded and no cont since (a failed pause leaves the VM running: no cont then). */
  #stopped = false;
  readonly #live: LiveVmPort;
  readonly #agent: AgentPort;

  constructor(live: LiveVmPort, agent: AgentPort) {
    this.#live = live;
    this.#agent = agent;
  }

  /** Whether this VM can be paused at all (the backend offers pause/cont). */
  get pausable(): boolean {
    return typeof this.#live.pause === "function" && typeof this.#live.cont === "function";
  }

  /** Stop the vCPUs unless the VM is checked out (or already paused). Never rejects. */
  pause(): Promise<void> {
    if (this.paused || this.checkedOut || !this.pausable) return this.#chain;
    this.paused = true;
    const live = this.#live;
    this.#chain = this.#chain.then(async () => {
      try {
        await live.pause?.();
        this.#stopped = true;
      } catch {
        // a VMM gone meanwhile: its exit marks the VM dead; anything else: it keeps running
      }
    });
    return this.#chain;
  }

  /**
   * Mark the VM checked out; if it is paused, start the wake (continue the vCPUs, then the agent's
   * resume with a fresh clock and entropy). Returns the wake (undefined when the VM runs already).
   * A failed wake stops the VM (its handle then reports it crashed).
   */
  wake(): Promise<void> | undefined {
    this.checkedOut = true;
    if (!this.paused) return undefined;
    this.paused = false;
    const live = this.#live;
    const agent = this.#agent;
    // Started after the caller got its handle (setImmediate): the acquire itself pays nothing for the
    // QMP `cont` being written. The resume is sent together with the cont, not after its answer, and
    // the handle's operations wait only until the resume frame is on the stream (`sent`), not for its
    // answer: the agent handles frames in order on one loop, so it sets the clock and reseeds the RNG
    // before it reads the next request, and the vCPUs run once `cont` lands. The wake thus costs the
    // guest's resume work, not an extra agent round trip. A failed wake stops the VM: what was sent
    // after the resume then fails as with any VM that died.
    let markSent!: () => void;
    const sent = new Promise<void>((r) => {
      markSent = r;
    });
    const w = this.#chain.then(async () => {
      try {
        await new Promise((r) => setImmediate(r));
        const cont = this.#stopped
          ? live.cont?.().then(() => {
              this.#stopped = false;
            })
          : undefined;
        const done = Promise.all([cont, agent.resume(nowNs(), randomBytes(64))]);
        // the client writes the frame once the microtasks of that call have run
        await Promise.race([done, new Promise((r) => setImmediate(r))]);
        markSent();
        await done;
      } finally {
        markSent();
      }
    });
    this.#chain = w.catch(() => undefined);
    this.waking = sent;
    w.then(
      () => {
        if (this.waking === sent) this.waking = undefined;
      },
      () => {
        void live.stop().catch(() => undefined);
      },
    );
    return w;
  }

  /** Continue the vCPUs without a resume (before a clean guest shutdown). Never rejects. */
  async contForStop(): Promise<void> {
    if (!this.paused) return this.#chain;
    this.paused = false;
    const live = this.#live;
    this.#chain = this.#chain.then(async () => {
      if (!this.#stopped) return;
      this.#stopped = false;
      await live.cont?.().catch(() => undefined);
    });
    return this.#chain;
  }
}

/**
 * The agent of a pooled VM as its handle sees it: every operation waits for the VM's wake first (at
 * once when none is under way). Events, hello and close pass straight through.
 */
export function gateAgent(agent: AgentPort, idle: IdleVm): AgentPort {
  const gated =
    <A extends unknown[], R>(fn: (...a: A) => Promise<R>) =>
    (...a: A): Promise<R> => {
      const w = idle.waking;
      return w ? w.then(() => fn(...a)) : fn(...a);
    };
  const g: AgentPort = {
    get hello() {
      return agent.hello;
    },
    get egress() {
      return agent.egress;
    },
    exec: gated((a) => agent.exec(a)),
    spawn: gated((a) => agent.spawn(a)),
    writeFile: gated((p, d, m, t) => agent.writeFile(p, d, m, t)),
    readFile: gated((p, t) => agent.readFile(p, t)),
    workloadSignal: gated((n) => agent.workloadSignal(n)),
    tcpConnect: gated((p) => agent.tcpConnect(p)),
    fsAttach: gated((t, p) => agent.fsAttach(t, p)),
    fsDetach: gated((t) => agent.fsDetach(t)),
    resume: gated((t, e) => agent.resume(t, e)),
    ping: gated(() => agent.ping()),
    shutdown: gated(() => agent.shutdown()),
    waitReady: gated((t) => agent.waitReady(t)),
    waitListening: gated((t) => agent.waitListening(t)),
    onLost: (cb) => agent.onLost(cb),
    close: () => agent.close(),
  };
  if (agent.onWorkloadExit) {
    const f = agent.onWorkloadExit.bind(agent);
    g.onWorkloadExit = (cb) => f(cb);
  }
  return g;
}
