import { describe, expect, it } from "vitest";
import { isRetryableError, RegistryClient } from "./registry";

describe("RegistryClient transport rules", () => {
  it("speaks plain HTTP only to allowed hosts", async () => {
    const c = new RegistryClient({ dockerConfig: false });
    expect(c.baseUrl("127.0.0.1:5000")).toBe("http://127.0.0.1:5000");
    expect(c.baseUrl("localhost:5000")).toBe("http://localhost:5000");
    expect(c.baseUrl("[::1]:5000")).toBe("http://[::1]:5000");
    expect(c.baseUrl("reg.test:5000")).toBe("https://reg.test:5000");
    expect(c.baseUrl("127.0.0.2")).toBe("https://127.0.0.2");
    await c.close();
    const d = new RegistryClient({
      insecureHosts: ["reg.test:5000"],
      endpoints: { "docker.io": "http://127.0.0.1:9/" },
    });
    expect(d.baseUrl("reg.test:5000")).toBe("http://reg.test:5000");
    expect(d.baseUrl("reg.test:6000")).toBe("https://reg.test:6000");
    expect(d.baseUrl("127.0.0.1:5000")).toBe("https://127.0.0.1:5000"); // the list replaces the default
    expect(d.baseUrl("docker.io")).toBe("http://127.0.0.1:9");
    await d.close();
  });

  it("retries connection resets and 'other side closed', not our own errors", () => {
    expect(isRetryableError(Object.assign(new Error("x"), { code: "ECONNRESET" }))).toBe(true);
    expect(isRetryableError(Object.assign(new Error("other side closed"), { code: "UND_ERR_SOCKET" }))).toBe(
      true,
    );
    expect(isRetryableError(new TypeError("terminated", { cause: { code: "ECONNRESET" } }))).toBe(true);
    expect(isRetryableError(Object.assign(new Error("bad"), { code: "SM_DIGEST_MISMATCH" }))).toBe(false);
    expect(isRetryableError(Object.assign(new Error("nope"), { code: "ENOSPC" }))).toBe(false);
  });

  it("uses credentials from the option before the docker config, with a source label", async () => {
    const c = new RegistryClient({
      credentials: (host) => (host === "127.0.0.1:5000" ? { username: "u", password: "p" } : undefined),
      dockerConfig: false,
    });
    expect(await c.credentialsFor("127.0.0.1:5000")).toEqual({
      kind: "basic",
      username: "u",
      password: "p",
      source: "the credentials option",
    });
    expect(await c.credentialsFor("127.0.0.1:6000")).toBeUndefined();
    await c.close();
  });
});
