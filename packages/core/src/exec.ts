/**
 * Exec: one command run to completion in the guest through the agent session, its deadlines, and the
 * mapping of a missing cwd to exit 127. Used by the Vm, the WarmupVm and the exec socket.
 */
import { codeOf, type SupermachineError } from "./errors";
import type { AgentExecArgs, AgentPort } from "./ports";
import type { ExecOptions, ExecOutput } from "./types";
import { MAX_TIMER_MS, validateExecOptions } from "./validate";

/**
 * How long past an exec's own timeoutMs the host waits for the agent's answer before it declares the
 * guest unresponsive. The agent kills the command at timeoutMs itself; the grace covers a loaded host.
 */
export const EXEC_ANSWER_GRACE_MS = 15_000;
/** The guest agent's own deadline for a file job (write-file, read-file, stage on a share path). */
const AGENT_FILE_JOB_MS = 60_000;
/** Host-side deadline for the answers to writeFile, readFile and the start of a spawn. */
export const RPC_ANSWER_TIMEOUT_MS = AGENT_FILE_JOB_MS + 30_000;

/** A command core runs itself in the guest (not a user's exec): root, cwd /, no env, stage or tty. */
export function internalExec(argv: string[], timeoutMs: number): AgentExecArgs {
  return { argv, env: {}, cwd: "/", stage: [], timeoutMs, chain: null, tty: false, cols: 80, rows: 24 };
}

/** What an exec needs of a VM (a VmHandle): its agent session, whether it died, its error mapping. */
export interface ExecTarget {
  readonly agent: AgentPort;
  readonly dead: boolean;
  translate(err: unknown, what: string): Promise<Error>;
}

export async function execOn(handle: ExecTarget, options: ExecOptions): Promise<ExecOutput> {
  const o = validateExecOptions(options);
  if (handle.dead) throw await handle.translate(null, "exec");
  try {
    const r = await handle.agent.exec({
      argv: o.argv,
      env: o.env,
      cwd: o.cwd,
      stage: o.stage,
      timeoutMs: o.timeoutMs,
      chain: o.chain,
      tty: o.tty,
      cols: o.cols,
      rows: o.rows,
      maxOutputBytes: o.maxOutputBytes,
      // staged files may first take the agent up to its 60 s file-job deadline (share paths)
      ...(o.timeoutMs > 0
        ? {
            answerTimeoutMs: Math.min(
              MAX_TIMER_MS,
              o.timeoutMs + EXEC_ANSWER_GRACE_MS + (o.stage.length > 0 ? AGENT_FILE_JOB_MS : 0),
            ),
          }
        : {}),
    });
    return {
      stdout: r.stdout,
      stderr: r.stderr,
      exitCode: r.exitCode,
      timedOut: r.timedOut,
      signal: r.signal,
      peakRssKib: r.peakRssKib,
    };
  } catch (err) {
    const e = await handle.translate(err, "exec");
    if (codeOf(e) === "SM_AGENT_ERROR" && (e as SupermachineError).details?.agentCode === "ENOENT") {
      // cwd missing: report like a shell would rather than as an exception.
      return {
        stdout: Buffer.alloc(0),
        stderr: Buffer.from(`supermachine: ${(err as Error).message}\n`),
        exitCode: 127,
      };
    }
    throw e;
  }
}
