import { OciError } from "./errors";
import type { Descriptor, Platform } from "./types";

const NODE_ARCH: Record<string, string> = {
  x64: "amd64",
  arm64: "arm64",
  arm: "arm",
  ia32: "386",
  ppc64: "ppc64le",
  s390x: "s390x",
  riscv64: "riscv64",
  loong64: "loong64",
};

/** The platform images are selected for by default: linux on the host's CPU architecture. */
export function hostPlatform(): Platform {
  const architecture = NODE_ARCH[process.arch] ?? process.arch;
  const p: Platform = { os: "linux", architecture };
  if (architecture === "arm64") p.variant = "v8";
  return p;
}

const ARCH_ALIASES: Record<string, string> = {
  x86_64: "amd64",
  "x86-64": "amd64",
  aarch64: "arm64",
  armhf: "arm",
  armel: "arm",
  i386: "386",
};

/** Parse `os/arch[/variant]` (e.g. `linux/arm64`, `linux/arm/v7`); arch aliases like aarch64 accepted. */
export function parsePlatform(s: string | Platform): Platform {
  if (typeof s !== "string") return normalizePlatform(s);
  const parts = s.split("/");
  if (parts.length < 2 || parts.length > 3 || parts.some((p) => p.length === 0)) {
    throw new OciError(
      "SM_OCI_OPTIONS",
      `invalid platform "${s}": expected os/arch[/variant], e.g. linux/arm64`,
    );
  }
  const p: Platform = { os: parts[0]!.toLowerCase(), architecture: parts[1]!.toLowerCase() };
  if (parts[2] !== undefined) p.variant = parts[2].toLowerCase();
  return normalizePlatform(p);
}

export function normalizePlatform(p: Platform): Platform {
  const architecture = ARCH_ALIASES[p.architecture] ?? p.architecture;
  const out: Platform = { os: p.os, architecture };
  let variant = p.variant;
  if (architecture === "arm64" && (variant === undefined || variant === "" || variant === "8"))
    variant = "v8";
  if (architecture === "arm" && variant !== undefined && /^\d$/.test(variant)) variant = `v${variant}`;
  if (architecture === "arm" && (variant === undefined || variant === "")) variant = "v7";
  if (variant !== undefined && variant !== "") out.variant = variant;
  return out;
}

export function formatPlatform(p: Platform): string {
  return `${p.os}/${p.architecture}${p.variant ? `/${p.variant}` : ""}`;
}

/** Whether an image platform satisfies a wanted platform (Docker's matcher: variant only checked when wanted). */
export function platformMatches(have: Platform, want: Platform): boolean {
  const h = normalizePlatform(have);
  const w = normalizePlatform(want);
  if (h.os !== w.os || h.architecture !== w.architecture) return false;
  if (w.variant === undefined) return true;
  return h.variant === w.variant;
}

/**
 * Choose the manifest for `want` from an index's descriptors. Attestation manifests
 * (platform unknown/unknown) are never chosen. Throws `SM_PLATFORM_NOT_FOUND`.
 */
export function selectManifest(manifests: Descriptor[], want: Platform, what: string): Descriptor {
  const candidates = manifests.filter((m) => m.platform && m.platform.os !== "unknown");
  const exact = candidates.find((m) => platformMatches(m.platform!, want));
  if (exact) return exact;
  // An arm variant older than the wanted one still runs (v6 on v7 host) — pick the best lower variant.
  const w = normalizePlatform(want);
  if (w.architecture === "arm" && w.variant) {
    const lower = candidates
      .filter((m) => {
        const p = normalizePlatform(m.platform!);
        return p.os === w.os && p.architecture === "arm" && (p.variant ?? "v7") < w.variant!;
      })
      .sort((a, b) => ((b.platform!.variant ?? "") < (a.platform!.variant ?? "") ? -1 : 1));
    if (lower[0]) return lower[0];
  }
  const available = candidates.map((m) => formatPlatform(normalizePlatform(m.platform!))).join(", ");
  throw new OciError(
    "SM_PLATFORM_NOT_FOUND",
    `${what} has no image for platform ${formatPlatform(w)} (available: ${available || "none"}). Pass a platform the index offers, e.g. platform: "${available.split(", ")[0] || "linux/amd64"}".`,
  );
}
