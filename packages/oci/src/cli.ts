#!/usr/bin/env node
import { parseArgs } from "node:util";
import { isOciError } from "./errors";
import type { Image } from "./image";
import { writeLayout } from "./local";
import { formatPlatform } from "./platform";
import type { ProgressEvent, ProgressListener } from "./progress";
import type { PullOptions } from "./pull";
import { inspect, type PullPolicy, pull } from "./pull";
import { push } from "./push";
import { OciStore } from "./store";
import { copy, loadFrom, parseLocation } from "./transport";

const USAGE = `supermachine-oci — OCI images without a Docker daemon

Usage:
  supermachine-oci pull REF [--platform os/arch[/variant]] [--layout DIR] [--policy always|missing|never]
  supermachine-oci push LAYOUT_DIR[:tag] REF
  supermachine-oci inspect REF [--platform P]          (prints JSON)
  supermachine-oci copy SRC DST [--platform P]         (docker://REF | oci:DIR[:tag] | oci-archive:F | docker-archive:F | docker-daemon:REF)
  supermachine-oci gc

Common options:
  --store DIR        blob store (default $XDG_CACHE_HOME/supermachine/oci)
  --insecure HOST    allow plain HTTP to HOST (repeatable; 127.0.0.1 and localhost always allowed)
Environment: SUPERMACHINE_REGISTRY_MIRRORS="docker.io=http://127.0.0.1:5000,ghcr.io=https://m.example"
             maps registries to mirrors; DOCKER_HOST selects the daemon for docker-daemon:REF
  --quiet            no progress output
`;

/** `push` takes a layout dir (`DIR[:tag]`, the `oci:` prefix optional) or another local location. */
function loadLocal(arg: string, options: PullOptions): Promise<Image> {
  const loc = /^(oci|oci-archive|docker-archive|docker-daemon):/.test(arg)
    ? parseLocation(arg)
    : parseLocation(`oci:${arg}`);
  return loadFrom(loc, options);
}

function fmtBytes(n: number): string {
  if (n < 1024) return `${n} B`;
  if (n < 1 << 20) return `${(n / 1024).toFixed(1)} KiB`;
  if (n < 1 << 30) return `${(n / (1 << 20)).toFixed(1)} MiB`;
  return `${(n / (1 << 30)).toFixed(2)} GiB`;
}

/** Progress as bars redrawn in place on a TTY, one plain line per finished blob otherwise. */
function progressRenderer(
  stream: NodeJS.WriteStream,
  quiet: boolean,
): { listener: ProgressListener; end(): void } {
  if (quiet) return { listener: () => {}, end() {} };
  if (!stream.isTTY) {
    return {
      listener: (e: ProgressEvent) => {
        if (e.type === "blob-done")
          stream.write(`${e.kind} ${e.digest.slice(7, 19)} ${e.action} ${fmtBytes(e.size)}\n`);
        else if (e.type === "manifest-resolved") stream.write(`resolved ${e.reference} ${e.digest}\n`);
      },
      end() {},
    };
  }
  const rows = new Map<string, { label: string; done: number; total: number; state: string }>();
  let drawn = 0;
  let timer: NodeJS.Timeout | undefined;
  const draw = () => {
    timer = undefined;
    if (drawn > 0) stream.write(`\x1b[${drawn}A`);
    const width = Math.max(10, Math.min(40, (stream.columns ?? 80) - 50));
    for (const r of rows.values()) {
      const frac = r.total > 0 ? Math.min(1, r.done / r.total) : 1;
      const full = Math.round(frac * width);
      const bar = `${"#".repeat(full)}${"-".repeat(width - full)}`;
      stream.write(
        `\x1b[2K${r.label} [${bar}] ${fmtBytes(r.done).padStart(10)} / ${fmtBytes(r.total)} ${r.state}\n`,
      );
    }
    drawn = rows.size;
  };
  const schedule = () => {
    timer ??= setTimeout(draw, 100);
  };
  return {
    listener: (e: ProgressEvent) => {
      if (e.type === "blob-start") {
        rows.set(e.digest, {
          label: `${e.kind.padEnd(8)} ${e.digest.slice(7, 19)}`,
          done: 0,
          total: e.size,
          state: "",
        });
      } else if (e.type === "blob-progress") {
        const r = rows.get(e.digest);
        if (r) r.done = e.done;
      } else if (e.type === "blob-done") {
        const r = rows.get(e.digest) ?? {
          label: `${e.kind.padEnd(8)} ${e.digest.slice(7, 19)}`,
          done: 0,
          total: e.size,
          state: "",
        };
        r.done = e.size;
        r.state = e.action;
        rows.set(e.digest, r);
      } else {
        return;
      }
      schedule();
    },
    end() {
      if (timer) clearTimeout(timer);
      if (rows.size) draw();
    },
  };
}

async function main(argv: string[]): Promise<number> {
  const { values, positionals } = parseArgs({
    args: argv,
    allowPositionals: true,
    options: {
      platform: { type: "string" },
      layout: { type: "string" },
      policy: { type: "string" },
      store: { type: "string" },
      insecure: { type: "string", multiple: true },
      quiet: { type: "boolean", short: "q" },
      help: { type: "boolean", short: "h" },
    },
  });
  const [cmd, ...args] = positionals;
  if (values.help || !cmd) {
    process.stdout.write(USAGE);
    return values.help ? 0 : 2;
  }
  const store = new OciStore(values.store);
  const common = {
    store,
    ...(values.platform ? { platform: values.platform } : {}),
    ...(values.insecure ? { insecureHosts: ["127.0.0.1", "localhost", "[::1]", ...values.insecure] } : {}),
  };
  const progress = progressRenderer(process.stderr, values.quiet === true || cmd === "inspect");
  try {
    switch (cmd) {
      case "pull": {
        if (args.length !== 1) break;
        const image = await pull(args[0]!, {
          ...common,
          pullPolicy: (values.policy ?? "always") as PullPolicy,
          onProgress: progress.listener,
        });
        progress.end();
        if (values.layout) {
          const d = await writeLayout(image, values.layout, image.index ? {} : { tag: "latest" });
          process.stdout.write(`${image.reference} ${image.digest} → ${values.layout} (${d.digest})\n`);
        } else {
          process.stdout.write(`${image.reference} ${image.digest} ${formatPlatform(image.platform)}\n`);
        }
        return 0;
      }
      case "push": {
        if (args.length !== 2) break;
        const image = await loadLocal(args[0]!, common);
        const r = await push(image, args[1]!, { ...common, onProgress: progress.listener });
        progress.end();
        process.stdout.write(`${r.reference} ${r.digest}\n`);
        return 0;
      }
      case "inspect": {
        if (args.length !== 1) break;
        const image = await inspect(args[0]!, common);
        const out = {
          reference: image.reference,
          digest: image.digest,
          mediaType: image.mediaType,
          manifestDigest: image.manifestDescriptor.digest,
          platform: formatPlatform(image.platform),
          platforms: image.index?.manifests.filter((m) => m.platform).map((m) => formatPlatform(m.platform!)),
          config: image.runtime,
          created: image.config.created,
          layers: image.layers.map((l) => ({ digest: l.digest, size: l.size, mediaType: l.mediaType })),
        };
        process.stdout.write(`${JSON.stringify(out, null, 2)}\n`);
        return 0;
      }
      case "copy": {
        if (args.length !== 2) break;
        const r = await copy(args[0]!, args[1]!, { ...common, onProgress: progress.listener });
        progress.end();
        process.stdout.write(`${args[1]} ${r.digest}\n`);
        return 0;
      }
      case "gc": {
        const r = await store.gc();
        process.stdout.write(`removed ${r.removed.length} blobs, freed ${fmtBytes(r.freedBytes)}\n`);
        return 0;
      }
      default:
        process.stderr.write(`unknown command "${cmd}"\n\n${USAGE}`);
        return 2;
    }
    process.stderr.write(`wrong arguments for ${cmd}\n\n${USAGE}`);
    return 2;
  } catch (err) {
    progress.end();
    if (isOciError(err)) {
      process.stderr.write(`error [${err.code}]: ${err.message}\n`);
      return 1;
    }
    throw err;
  }
}

main(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code;
  },
  (err) => {
    process.stderr.write(`unexpected error: ${err?.stack ?? err}\n`);
    process.exitCode = 1;
  },
);
