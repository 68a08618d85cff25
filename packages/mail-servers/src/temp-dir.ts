import { mkdirSync, mkdtempSync, rmSync } from "node:fs";
import { rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { onProcessExit } from "./cleanup.js";

/** A folder that exists until `remove()` is called or the process exits. */
export interface TempDir {
  /** Absolute path of the folder. */
  readonly path: string;
  /** Deletes the folder and everything in it; safe to call twice. */
  remove(): Promise<void>;
}

/** True when POSTROOM_KEEP_TEMP=1: temp folders survive the run so a failing test can be inspected. */
export function keepTemp(): boolean {
  return process.env.POSTROOM_KEEP_TEMP === "1";
}

/**
 * Creates a fresh folder under the OS temp dir named `postroom-<prefix>-XXXXXX`. It is removed on
 * `remove()` and, failing that, when the process exits (unless POSTROOM_KEEP_TEMP=1).
 */
export function tempDir(prefix = "test"): TempDir {
  const safe = prefix.replace(/[^A-Za-z0-9_-]/g, "-").slice(0, 40);
  const path = mkdtempSync(join(tmpdir(), `postroom-${safe}-`));
  const unregister = onProcessExit(() => {
    if (!keepTemp()) rmSync(path, { recursive: true, force: true });
  });
  return {
    path,
    async remove() {
      unregister();
      if (!keepTemp()) await rm(path, { recursive: true, force: true });
    },
  };
}

/**
 * A folder that is kept: `remove()` does nothing. For servers whose data must outlive the process
 * (`postroom demo` keeps its Maildirs and Postfix queue under .postroom/demo between runs).
 */
export function keptDir(path: string): TempDir {
  mkdirSync(path, { recursive: true });
  return { path, remove: async () => {} };
}
