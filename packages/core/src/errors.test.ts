import { describe, expect, it } from "vitest";
import { diskFullErrno } from "./errors";

describe("diskFullErrno", () => {
  it("finds ENOSPC / EDQUOT in an error, its details or its cause chain, and nothing else", () => {
    const fsErr = Object.assign(new Error("ENOSPC: no space left on device, write"), { code: "ENOSPC" });
    expect(diskFullErrno(fsErr)).toBe("ENOSPC");
    // a lower package's wrapper around the fs error
    expect(
      diskFullErrno(
        Object.assign(new Error("writing the spool failed"), { code: "SM_ROOTFS_IO", cause: fsErr }),
      ),
    ).toBe("ENOSPC");
    // the hypervisor's migration failure, where only the writer's stderr knew
    expect(
      diskFullErrno(
        Object.assign(new Error("snapshot migration failed"), {
          code: "SM_QMP",
          details: { errno: "EDQUOT" },
        }),
      ),
    ).toBe("EDQUOT");
    expect(diskFullErrno(new Error("cat: write error: No space left on device"))).toBe("ENOSPC");
    expect(diskFullErrno(Object.assign(new Error("nope"), { code: "EACCES" }))).toBeUndefined();
    expect(diskFullErrno(undefined)).toBeUndefined();
    // a cycle in the cause chain ends
    const a: { message: string; cause?: unknown } = { message: "a" };
    a.cause = a;
    expect(diskFullErrno(a)).toBeUndefined();
  });
});
