import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { mkdir, readdir, utimes } from "node:fs/promises";
import { hostname } from "node:os";
import { join } from "node:path";
import { test } from "node:test";
import { tempDir } from "@postroom/testkit";
import { cleanStaging, STALE_STAGING_MS, StagedFolder } from "./disk.js";

// Archiver replicas sharing one archive folder share its `.tmp`. An archiver starting removes
// what a crashed process left there, and nothing another live replica is writing.

test("an archiver starting removes a dead process's staging folders and stale ones, and keeps a live replica's and its own", async () => {
  const dir = tempDir("staging");
  try {
    const root = dir.path;
    const host = encodeURIComponent(hostname());
    // A process that has ended: its pid is free (checked by the kernel, not assumed).
    const gone = spawn(process.execPath, ["-e", ""]);
    const deadPid = await new Promise<number>((resolve) => gone.once("exit", () => resolve(gone.pid!)));
    // A live twin on this host: this test's parent process stands in for it.
    const livePid = process.ppid;
    const made = {
      dead: `${host}~${deadPid}~aaaa1111~1-x`,
      live: `${host}~${livePid}~bbbb2222~1-y`,
      otherHost: `${encodeURIComponent("another-pod")}~${deadPid}~cccc3333~1-z`,
      oldFormat: "1700000000000-abcdef",
      staleOtherHost: `${encodeURIComponent("another-pod")}~42~dddd4444~1-w`,
    };
    for (const name of Object.values(made)) await mkdir(join(root, ".tmp", name, "parts"), { recursive: true });
    const own = await StagedFolder.create(root);
    // Untouched for longer than the staleness bound: whoever made it is gone.
    const old = new Date(Date.now() - STALE_STAGING_MS - 60_000);
    for (const p of [join(root, ".tmp", made.staleOtherHost), join(root, ".tmp", made.staleOtherHost, "parts")]) await utimes(p, old, old);

    await cleanStaging(root);

    const left = new Set(await readdir(join(root, ".tmp")));
    assert.equal(left.has(made.dead), false, "a dead process's folder on this host is removed at once");
    assert.equal(left.has(made.staleOtherHost), false, "a folder nobody touched for the staleness bound is removed");
    assert.ok(left.has(made.live), "a live replica's folder stays");
    assert.ok(left.has(made.otherHost), "another host's fresh folder stays (its process may be alive)");
    assert.ok(left.has(made.oldFormat), "a fresh folder of unknown owner stays until it is stale");
    assert.ok(left.has(own.path.split("/").at(-1)!), "its own folder stays");
  } finally {
    await dir.remove();
  }
});
