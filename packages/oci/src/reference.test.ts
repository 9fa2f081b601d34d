import { describe, expect, it } from "vitest";
import { familiarReference, formatReference, parseReference } from "./reference";

const D = `sha256:${"a".repeat(64)}`;

describe("parseReference normalises like Docker", () => {
  const ok: Array<[string, string, Partial<ReturnType<typeof parseReference>>?]> = [
    ["alpine", "docker.io/library/alpine:latest"],
    ["alpine:3.20", "docker.io/library/alpine:3.20"],
    ["library/alpine", "docker.io/library/alpine:latest"],
    ["docker.io/alpine", "docker.io/library/alpine:latest"],
    ["docker.io/library/alpine:edge", "docker.io/library/alpine:edge"],
    ["user/app", "docker.io/user/app:latest"],
    ["test_com", "docker.io/library/test_com:latest"],
    ["test.com:tag", "docker.io/library/test.com:tag"],
    ["test.com:5000", "docker.io/library/test.com:5000", { tag: "5000" }],
    ["test.com/repo:tag", "test.com/repo:tag", { registry: "test.com", repository: "repo" }],
    ["test:5000/repo", "test:5000/repo:latest", { registry: "test:5000" }],
    ["localhost/foo", "localhost/foo:latest", { registry: "localhost", repository: "foo" }],
    ["localhost:5000/a/b/c:v1.2-rc_3", "localhost:5000/a/b/c:v1.2-rc_3"],
    ["127.0.0.1:5000/team/app", "127.0.0.1:5000/team/app:latest", { registry: "127.0.0.1:5000" }],
    ["[::1]:5000/foo", "[::1]:5000/foo:latest", { registry: "[::1]:5000" }],
    ["Foo/bar", "Foo/bar:latest", { registry: "Foo", repository: "bar" }],
    [`app@${D}`, `docker.io/library/app@${D}`, { tag: undefined, digest: D }],
    [`test:5000/repo:tag@${D}`, `test:5000/repo:tag@${D}`, { tag: "tag", digest: D }],
    ["a-b__c/e--f", "docker.io/a-b__c/e--f:latest"],
    ["a-b.c__d", "docker.io/library/a-b.c__d:latest"],
    [`x:${"t".repeat(128)}`, `docker.io/library/x:${"t".repeat(128)}`],
    // Docker Hub's other host names are the same registry: the name says docker.io.
    ["index.docker.io/alpine", "docker.io/library/alpine:latest"],
    ["index.docker.io/library/alpine:3", "docker.io/library/alpine:3"],
    ["registry-1.docker.io/user/img:1", "docker.io/user/img:1"],
    ["REGISTRY-1.docker.io/alpine", "docker.io/library/alpine:latest"],
  ];
  for (const [input, expected, parts] of ok) {
    it(`${input} → ${expected}`, () => {
      const r = parseReference(input);
      expect(formatReference(r)).toBe(expected);
      if (parts) expect(r).toMatchObject(parts);
    });
  }

  const bad: Array<[string, RegExp]> = [
    ["", /empty/],
    [" alpine", /whitespace/],
    ["my image", /whitespace/],
    [":justtag", /missing/],
    [`@${D}`, /missing/],
    ["foo/Bar", /lowercase/],
    ["UPPER", /lowercase/],
    ["repo@sha256:abc", /not a valid digest/],
    [`repo@sha256:${"a".repeat(63)}`, /64 lowercase/],
    [`repo@sha256:${"A".repeat(64)}`, /64 lowercase/],
    [`repo@md5:${"a".repeat(32)}`, /unsupported digest algorithm/],
    ["repo:-tag", /not a valid tag/],
    [`x:${"t".repeat(129)}`, /not a valid tag/],
    ["a..b", /not a valid repository/],
    ["-a", /not a valid repository/],
    ["a-", /not a valid repository/],
    ["a//b", /not a valid repository/],
    ["host:5000/", /not a valid repository/],
    ["a".repeat(64).replace(/a/g, "f"), /64-character hexadecimal/],
    [`x/${"a".repeat(260)}`, /255 characters/],
    ["ho_st.com/repo", /not a valid registry/],
  ];
  for (const [input, why] of bad) {
    it(`rejects ${JSON.stringify(input.length > 40 ? `${input.slice(0, 40)}…` : input)}`, () => {
      let err: unknown;
      try {
        parseReference(input);
      } catch (e) {
        err = e;
      }
      expect(err).toMatchObject({ code: "SM_INVALID_REFERENCE", message: expect.stringMatching(why) });
    });
  }

  it("prints the familiar short form", () => {
    expect(familiarReference(parseReference("alpine"))).toBe("alpine:latest");
    expect(familiarReference(parseReference("user/app:1"))).toBe("user/app:1");
    expect(familiarReference(parseReference("127.0.0.1:5000/x"))).toBe("127.0.0.1:5000/x:latest");
  });
});
