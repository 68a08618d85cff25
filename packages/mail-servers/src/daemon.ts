import { spawn, type ChildProcess } from "node:child_process";
import { accessSync, closeSync, constants, openSync, readFileSync } from "node:fs";
import { delimiter, join } from "node:path";
import { connect } from "node:net";
import { onProcessExit } from "./cleanup.js";

/** Thrown when a server binary is not installed; the message says how to install it. */
export class MissingBinaryError extends Error {
  override name = "MissingBinaryError";
}

/**
 * Finds an executable on PATH or in the sbin folders (which a non-root PATH often lacks: Debian
 * puts dovecot and postfix in /usr/sbin). `envVar` lets a developer point at another build.
 */
export function findBinary(name: string, envVar?: string): string {
  const override = envVar === undefined ? undefined : process.env[envVar];
  if (override !== undefined && override !== "") return override;
  const dirs = [...(process.env.PATH ?? "").split(delimiter), "/usr/sbin", "/usr/local/sbin", "/sbin"];
  for (const dir of dirs) {
    if (dir === "") continue;
    const candidate = join(dir, name);
    try {
      accessSync(candidate, constants.X_OK);
      return candidate;
    } catch {
      // not here
    }
  }
  throw new MissingBinaryError(
    `"${name}" is not installed (looked on PATH and in /usr/sbin). Run scripts/test-env.sh as root, ` +
      `or install it yourself (Debian: apt-get install dovecot-imapd dovecot-pop3d dovecot-lmtpd postfix openssl; the full list is in scripts/test-env.sh)` +
      (envVar === undefined ? "." : `, or set ${envVar} to its path.`),
  );
}

/** Options for {@link spawnDaemon}. */
export interface SpawnDaemonOptions {
  /** Executable path. */
  command: string;
  /** Arguments; the daemon must stay in the foreground (e.g. `dovecot -F`). */
  args: string[];
  /** File that receives the daemon's stdout and stderr. */
  outputPath: string;
  /** Extra environment. */
  env?: NodeJS.ProcessEnv;
  /**
   * Its own process group, so a terminal's Ctrl-C reaches only the parent, which then decides the
   * order of shutdown (`postroom demo`: the services first, the mail servers last). Default false.
   */
  detached?: boolean;
}

/** A foreground daemon started by {@link spawnDaemon}. */
export interface Daemon {
  /** The child process. */
  readonly child: ChildProcess;
  /** Resolves with the exit code (or signal name) once the process has ended. */
  readonly exited: Promise<number | string>;
  /** True until the process has exited. */
  running(): boolean;
  /** SIGTERM, then SIGKILL after `graceMs` (default 5 s); resolves once the process is gone. */
  stop(graceMs?: number): Promise<void>;
  /** What the daemon printed to stdout/stderr so far. */
  output(): string;
}

/**
 * Starts a server process in the foreground of a child, its stdout/stderr going to a file.
 *
 * Why a file and not pipes: a daemon holding the test runner's pipes keeps node:test waiting after
 * the test has finished. Why `unref()`: a test that forgets `stop()` should still end; the process-exit
 * hook then kills the daemon so nothing is left listening.
 */
export function spawnDaemon(options: SpawnDaemonOptions): Daemon {
  const fd = openSync(options.outputPath, "a");
  let child: ChildProcess;
  try {
    child = spawn(options.command, options.args, {
      stdio: ["ignore", fd, fd],
      env: { ...process.env, ...options.env },
      detached: options.detached ?? false,
    });
  } finally {
    closeSync(fd);
  }
  child.unref();
  let alive = true;
  const exited = new Promise<number | string>((resolve) => {
    child.once("exit", (code, signal) => {
      alive = false;
      resolve(code ?? signal ?? "unknown");
    });
    child.once("error", (error) => {
      alive = false;
      resolve(`spawn error: ${error.message}`);
    });
  });
  const unregister = onProcessExit(() => {
    if (alive) child.kill("SIGKILL");
  });
  return {
    child,
    exited,
    running: () => alive,
    async stop(graceMs = 5_000) {
      unregister();
      if (!alive) return;
      child.kill("SIGTERM");
      const timer = setTimeout(() => {
        if (alive) child.kill("SIGKILL");
      }, graceMs);
      await exited;
      clearTimeout(timer);
    },
    output: () => {
      try {
        return readFileSync(options.outputPath, "utf8");
      } catch {
        return "";
      }
    },
  };
}

/**
 * Connects to `host:port`, reads the first line the server sends (its greeting) and disconnects.
 * Rejects if the connection is refused or no line arrives within `timeoutMs`.
 */
export function readGreeting(host: string, port: number, timeoutMs = 2_000): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = connect({ host, port });
    let buffer = "";
    const done = (error: Error | undefined, line?: string) => {
      socket.destroy();
      clearTimeout(timer);
      if (error !== undefined) reject(error);
      else resolve(line ?? "");
    };
    const timer = setTimeout(() => done(new Error(`no greeting from ${host}:${port} within ${timeoutMs} ms`)), timeoutMs);
    socket.setEncoding("utf8");
    socket.on("data", (chunk: string) => {
      buffer += chunk;
      const end = buffer.indexOf("\n");
      if (end >= 0) done(undefined, buffer.slice(0, end).replace(/\r$/, ""));
    });
    socket.on("error", (error) => done(error));
    socket.on("close", () => done(new Error(`${host}:${port} closed the connection before greeting`)));
  });
}

/** Last `lines` lines of a text, for error messages. */
export function tail(text: string, lines = 20): string {
  return text.split("\n").slice(-lines - 1).join("\n");
}
