import { describe, expect, it } from "vitest";
import { MAX_FRAME } from "./constants";
import { type AgentError, isAgentError } from "./errors";
import { type Direction, decodeFrame, encodeFrame, type Frame, validateResult } from "./frames";
import { parseRequestArgs, RequestError } from "./ops";
import { FrameReader } from "./reader";
import { fromMeaning, loadVectors, toMeaning } from "./test-helpers";

const vectors = loadVectors();

/** Feeds the vector's bytes through a FrameReader and returns bodies and the reader error. */
function read(hex: string): { bodies: Buffer[]; error: AgentError | null } {
  const bodies: Buffer[] = [];
  let error: AgentError | null = null;
  const r = new FrameReader({
    maxFrame: MAX_FRAME,
    onFrame: (b) => bodies.push(b),
    onError: (e) => {
      error = e;
    },
  });
  r.push(Buffer.from(hex, "hex"));
  return { bodies, error };
}

function directions(dir: Direction | undefined): Direction[] {
  return dir === undefined ? ["host-to-agent", "agent-to-host"] : [dir];
}

describe("shared test vectors (test-vectors/vectors.json)", () => {
  it("has a healthy mix of valid and invalid vectors with unique names", () => {
    expect(new Set(vectors.map((v) => v.name)).size).toBe(vectors.length);
    expect(vectors.filter((v) => v.valid).length).toBeGreaterThan(40);
    expect(vectors.filter((v) => !v.valid).length).toBeGreaterThan(60);
  });

  for (const v of vectors.filter((x) => x.valid)) {
    it(`accepts ${v.name}`, () => {
      const { bodies, error } = read(v.hex);
      expect(error).toBeNull();
      expect(bodies).toHaveLength(1);
      for (const dir of directions(v.direction)) {
        const frame = decodeFrame(bodies[0]!, dir);
        const decoded = toMeaning(decodeFrame(bodies[0]!, dir));
        // the validated frame carries exactly the known fields; compare those against the meaning
        const meaning = v.meaning as Record<string, unknown>;
        for (const [k, val] of Object.entries(decoded as Record<string, unknown>)) {
          if (val === undefined) continue;
          expect(meaning[k], `${v.name}.${k}`).toEqual(val);
        }
        if (v.op !== undefined && frame.t === "res" && frame.result !== undefined)
          validateResult(v.op, frame.result);
        if (frame.t === "req") {
          if (v.resError !== undefined) {
            let code: string | undefined;
            try {
              parseRequestArgs(frame.op, frame.args);
            } catch (e) {
              expect(e).toBeInstanceOf(RequestError);
              code = (e as RequestError).code;
            }
            expect(code).toBe(v.resError);
          } else {
            expect(() => parseRequestArgs(frame.op, frame.args)).not.toThrow();
          }
        }
      }
      if (v.canonical) {
        expect(encodeFrame(fromMeaning(v.meaning) as unknown as Frame).toString("hex")).toBe(v.hex);
      }
    });
  }

  for (const v of vectors.filter((x) => !x.valid)) {
    it(`rejects ${v.name}${v.error ? ` with ${v.error}` : " (incomplete)"}`, () => {
      const { bodies, error } = read(v.hex);
      if (v.incomplete) {
        expect(error).toBeNull();
        expect(bodies).toHaveLength(0);
        return;
      }
      let err: unknown = error;
      if (err === null) {
        expect(bodies).toHaveLength(1);
        for (const dir of directions(v.direction)) {
          try {
            const frame = decodeFrame(bodies[0]!, dir);
            if (v.op !== undefined && frame.t === "res" && frame.result !== undefined)
              validateResult(v.op, frame.result);
            err = null;
          } catch (e) {
            err = e;
          }
          expect(isAgentError(err), `${v.name} (${dir}) must be rejected`).toBe(true);
          expect((err as AgentError).code).toBe("SM_AGENT_PROTOCOL");
          expect((err as AgentError).reason).toBe(v.error);
        }
      } else {
        expect((err as AgentError).reason).toBe(v.error);
        expect(bodies).toHaveLength(0);
      }
    });
  }

  it("a __proto__ key never changes a prototype", () => {
    const v = vectors.find((x) => x.name === "proto-key-literal")!;
    const frame = decodeFrame(read(v.hex).bodies[0]!, "agent-to-host");
    expect(frame).toEqual({ t: "eof", ch: 6 });
    expect(({} as Record<string, unknown>).polluted).toBeUndefined();
    expect(Object.getPrototypeOf(frame)).toBe(Object.prototype);
  });

  it("oversized frames are rejected from the length prefix alone", () => {
    // a 4-byte prefix announcing 6 MiB: the error comes before any body byte exists
    const { error } = read("00600000");
    expect(error?.reason).toBe("SM_FRAME_TOO_LARGE");
  });
});
