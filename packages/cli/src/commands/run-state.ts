/**
 * The run-state file: `postroom up` and `postroom demo` write `.postroom/state.json` in the folder
 * they run from, naming the config, the NATS URL and the namespace they actually use. `status` and
 * the other commands read it when neither `--config` nor `POSTROOM_CONFIG` is given, so
 * `pnpm postroom status` in a second terminal looks at the same system without flags — before,
 * it exited 2 (no config), or, given the config, read another NATS or namespace and called every
 * mailbox STALLED.
 */
import { existsSync, readFileSync } from "node:fs";
import { mkdir, readFile, rename, rm, writeFile } from "node:fs/promises";
import { dirname, join, resolve } from "node:path";

/** What a running `up` / `demo` tells other commands. */
export interface RunState {
  /** Absolute path of the config file. */
  config: string;
  /** The NATS URL the services were given (possibly a nats-server `up` started itself). */
  natsUrl: string;
  /** The NATS namespace in use. */
  namespace: string;
  /** The PostgreSQL URL, only when it carries no secret of the operator's (an embedded cluster's fixed local password is none). */
  databaseUrl?: string;
  /** Where the agent desktop listens. */
  agentApi: string;
  /** The `up` process; a state whose process is gone is stale. */
  pid: number;
  startedAt: string;
  /** Written by `postroom demo`. */
  demo?: boolean;
}

export const STATE_FILE = "state.json";

/** Writes `<dir>/state.json` atomically; returns its path. */
export async function writeRunState(dir: string, state: RunState): Promise<string> {
  await mkdir(dir, { recursive: true });
  const path = join(dir, STATE_FILE);
  await writeFile(`${path}.tmp`, `${JSON.stringify(state, null, 2)}\n`);
  await rename(`${path}.tmp`, path);
  return path;
}

/** Removes the state file if it is still this process's (a newer run may have replaced it). */
export async function clearRunState(path: string, pid: number): Promise<void> {
  const text = await readFile(path, "utf8").catch(() => undefined);
  if (text === undefined) return;
  try {
    if ((JSON.parse(text) as RunState).pid !== pid) return;
  } catch {
    // unreadable: ours to remove
  }
  await rm(path, { force: true });
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === "EPERM";
  }
}

/**
 * The nearest `.postroom/state.json` from `cwd` upwards whose process is still running, like git
 * finds `.git`. A file left by a killed run is ignored.
 */
export function findRunState(cwd: string): { path: string; state: RunState } | undefined {
  for (let dir = resolve(cwd); ; dir = dirname(dir)) {
    const path = join(dir, ".postroom", STATE_FILE);
    if (existsSync(path)) {
      try {
        const state = JSON.parse(readFileSync(path, "utf8")) as RunState;
        if (typeof state.config === "string" && typeof state.pid === "number" && alive(state.pid)) return { path, state };
      } catch {
        // a half-written or foreign file: keep looking upwards
      }
    }
    if (dirname(dir) === dir) return undefined;
  }
}

/** Which config a command uses and the environment to load it with. */
export interface CommandTarget {
  /** The config file, or undefined when none was found. */
  config: string | undefined;
  /** `env` with NATS_URL / POSTROOM_NAMESPACE of the running system filled in when they apply. */
  env: NodeJS.ProcessEnv;
  /** How it was found, for messages. */
  source: "--config" | "POSTROOM_CONFIG" | "state" | "none";
  state?: RunState;
}

/**
 * Finds the config the way `up` was given it: `--config`, then `POSTROOM_CONFIG`, then the running
 * system's state file. When the state file names the same config, its NATS URL and namespace are
 * used unless the environment sets them: the commands then read what the services write.
 */
export function commandTarget(configArg: string | undefined, env: NodeJS.ProcessEnv, cwd = process.cwd()): CommandTarget {
  const found = findRunState(cwd);
  const explicit = configArg ?? env.POSTROOM_CONFIG;
  const source: CommandTarget["source"] = configArg !== undefined ? "--config" : env.POSTROOM_CONFIG ? "POSTROOM_CONFIG" : found ? "state" : "none";
  const config = explicit !== undefined && explicit !== "" ? resolve(cwd, explicit) : found?.state.config;
  if (!found || config !== found.state.config) return { config, env, source };
  return {
    config,
    env: {
      ...env,
      NATS_URL: env.NATS_URL || found.state.natsUrl,
      POSTROOM_NAMESPACE: env.POSTROOM_NAMESPACE || found.state.namespace,
      ...(found.state.databaseUrl && !env.DATABASE_URL ? { DATABASE_URL: found.state.databaseUrl } : {}),
    },
    source,
    state: found.state,
  };
}
