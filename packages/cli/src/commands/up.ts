/**
 * `postroom up [--config FILE] [--only svc,svc] [--data-dir DIR]`: runs the whole system on one
 * machine. Validates the config, finds or starts NATS and PostgreSQL (up-deps.ts), sets up the
 * database roles when the services have users of their own, then runs the five services under a
 * Supervisor until Ctrl-C / SIGTERM.
 */
import { existsSync } from "node:fs";
import { dirname, join, relative, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";
import { ConfigError, loadConfigFile, resolveSecret, SecretError, type PostroomConfig } from "@postroom/config";
import { rolesConfigured, runDatabaseSetup, withCredentials } from "@postroom/runtime";
import { ansi, formatPrefix } from "../supervisor/log-format.js";
import { Supervisor, type ServiceCommand, type SupervisorOutput } from "../supervisor/supervisor.js";
import { clearRunState, writeRunState } from "./run-state.js";
import { envFileFor, missingSecrets, readEnvFile, secretUses } from "./secrets-preflight.js";
import { DependencyError, EMBEDDED_PG_PASSWORD, discoverNats, discoverPostgres, redactUrl, type DependencySource, type RunningDependency } from "./up-deps.js";

/** The services that apply a changed config on SIGHUP without restarting (see `postroom reload`). */
export const RELOADABLE = ["archiver"];

/** The services `up` runs, in start order. */
export const SERVICES = ["token-service", "imap-poller", "archiver", "asd-bridge", "smtp-sender"] as const;

const USAGE = `Usage: postroom up [--config FILE] [--only svc,svc] [--data-dir DIR]

Runs every Postroom service on this machine with readable, prefixed logs.
NATS and PostgreSQL: NATS_URL / DATABASE_URL if set, else the config's URLs if they answer,
else 127.0.0.1:4222 / 127.0.0.1:5432, else a nats-server and an embedded PostgreSQL of its own.

  -c, --config FILE    configuration file (default: $POSTROOM_CONFIG)
      --only LIST      comma-separated services to run (${SERVICES.join(", ")})
      --data-dir DIR   where its own NATS / PostgreSQL keep data (default: .postroom)
  -h, --help           show this help

Ctrl-C stops the services (SIGTERM, then SIGKILL after 10 s); a second Ctrl-C kills them at once.`;

/** Seams for tests; the command itself is `run(argv)`. */
export interface UpOptions {
  /** Folder relative paths are resolved against. Default `process.cwd()`. */
  cwd?: string;
  /** Environment read for POSTROOM_CONFIG, NATS_URL, DATABASE_URL and passed on. Default `process.env`. */
  env?: NodeJS.ProcessEnv;
  /** Where logs go. Default `process.stdout`. */
  output?: SupervisorOutput;
  /** Where errors go. Default `process.stderr`. */
  errors?: SupervisorOutput;
  /** The repository root services run from. Default: found from this file's location. */
  root?: string;
  /** The TypeScript file each service runs. Default `<root>/services/<name>/src/main.ts`. */
  entryPoint?: (name: string, root: string) => string;
  /** How long stop waits before SIGKILL. Default 10 s. */
  stopTimeoutMs?: number;
  /** Where the run-state file goes (see run-state.ts). Default `<cwd>/.postroom`. */
  stateDir?: string;
  /** Extra variables for the services only (the demo's CA file). */
  childEnv?: NodeJS.ProcessEnv;
  /** Marks the run-state file as the demo's. */
  demo?: boolean;
  /** Called once the services are started; `stop` ends the run as Ctrl-C does. */
  onRunning?: (run: { nats: RunningDependency; database: RunningDependency; stop: () => void }) => Promise<void> | void;
}

/** The entry point of the `up` command: returns the process exit code. */
export function run(argv: string[]): Promise<number> {
  return runUp(argv);
}

/** Walks up from this file to the folder with pnpm-workspace.yaml. */
export function findRepoRoot(from = dirname(fileURLToPath(import.meta.url))): string {
  for (let dir = from; ; dir = dirname(dir)) {
    if (existsSync(join(dir, "pnpm-workspace.yaml"))) return dir;
    if (dirname(dir) === dir) return process.cwd();
  }
}

/** The command line a service runs with, from the repository root. */
export function serviceCommand(name: string, root: string, entryPoint: string, env: NodeJS.ProcessEnv): ServiceCommand {
  // `--import tsx` is resolved from the working directory, where tsx is a root devDependency;
  // `--conditions=source` makes workspace packages resolve to their TypeScript sources.
  return { name, command: process.execPath, args: ["--conditions=source", "--import", "tsx", entryPoint], cwd: root, env };
}

const SOURCE_LABEL: Record<DependencySource, string> = {
  environment: "from the environment",
  config: "from the config",
  local: "found running locally",
  started: "started by postroom up",
};

/** `postroom up` with seams for tests. */
export async function runUp(argv: string[], options: UpOptions = {}): Promise<number> {
  const cwd = options.cwd ?? process.cwd();
  const env = options.env ?? process.env;
  const out = options.output ?? process.stdout;
  const err = options.errors ?? process.stderr;
  const colour = out.isTTY === true && !env.NO_COLOR;
  // Set once the services are known, so these lines line up with the supervisor's.
  let prefix = "postroom │ ";
  const say = (message: string) => out.write(`${prefix}${message}\n`);
  const shown = (path: string) => {
    const rel = relative(cwd, path);
    return rel && !rel.startsWith("..") ? rel : path;
  };
  const fail = (message: string) => err.write(`postroom up: ${message}\n`);

  // 1. Arguments.
  let args: { config?: string | undefined; only?: string | undefined; "data-dir"?: string | undefined; help?: boolean | undefined };
  try {
    args = parseArgs({
      args: argv,
      options: { config: { type: "string", short: "c" }, only: { type: "string" }, "data-dir": { type: "string" }, help: { type: "boolean", short: "h" } },
      strict: true,
      allowPositionals: false,
    }).values;
  } catch (error) {
    fail(`${(error as Error).message}\n\n${USAGE}`);
    return 2;
  }
  if (args.help) {
    out.write(`${USAGE}\n`);
    return 0;
  }
  const configArg = args.config ?? env.POSTROOM_CONFIG;
  if (!configArg) {
    fail("no configuration given: pass --config FILE or set POSTROOM_CONFIG (try `postroom demo`, or examples/postroom.example.yaml)");
    return 2;
  }
  const selected = args.only ? args.only.split(",").map((s) => s.trim()).filter(Boolean) : [...SERVICES];
  const unknown = selected.filter((s) => !(SERVICES as readonly string[]).includes(s));
  if (unknown.length > 0 || selected.length === 0) {
    fail(`--only: unknown service ${unknown.map((u) => `"${u}"`).join(", ") || "(none given)"}; choose from ${SERVICES.join(", ")}`);
    return 2;
  }

  prefix = formatPrefix("postroom", Math.max("postroom".length, ...selected.map((s) => s.length)), colour ? ansi.bold : undefined);

  // 2. Config, before anything is started.
  const configPath = resolve(cwd, configArg);
  let config: PostroomConfig;
  try {
    config = await loadConfigFile(configPath);
  } catch (error) {
    if (error instanceof ConfigError) {
      fail(`${shown(configPath)} is not a valid configuration (${error.issues.length} problem${error.issues.length === 1 ? "" : "s"}):`);
      for (const issue of error.issues) {
        err.write(`  ✗ ${issue.path || "(top level)"}: ${issue.message}\n`);
        if (issue.fix) err.write(`      fix: ${issue.fix}\n`);
      }
    } else {
      const code = (error as NodeJS.ErrnoException).code;
      fail(`cannot read configuration ${configPath}: ${code ?? (error as Error).message}${code === "ENOENT" ? " (no such file)" : ""}`);
    }
    return 1;
  }

  const root = options.root ?? findRepoRoot();
  const entryPoint = options.entryPoint ?? ((name: string, r: string) => join(r, "services", name, "src", "main.ts"));
  const missing = selected.filter((name) => !existsSync(entryPoint(name, root)));
  if (missing.length > 0) {
    fail(`no entry point for ${missing.join(", ")}: ${missing.map((m) => shown(entryPoint(m, root))).join(", ")} does not exist`);
    err.write(`  fix: run the others with --only ${selected.filter((s) => !missing.includes(s)).join(",") || "<service>"}\n`);
    return 1;
  }

  // Secrets: every reference the selected services will resolve must resolve now, or nothing
  // starts. The postroom.env beside the config (what `config import-softdial` writes) fills in
  // variables the environment does not set; the environment wins.
  const envFile = envFileFor(configPath);
  const fileEnv = readEnvFile(envFile);
  const runEnv: NodeJS.ProcessEnv = { ...fileEnv, ...env };
  const uses = secretUses(config).filter((u) => selected.includes(u.service));
  const unresolved = await missingSecrets(uses, runEnv, shown(configPath), shown(envFile));
  if (unresolved.length > 0) {
    fail(`${unresolved.length} secret${unresolved.length === 1 ? " is" : "s are"} missing; no service was started:`);
    for (const m of unresolved) {
      err.write(`  ✗ ${m.problem}\n`);
      err.write(`      fix: ${m.fix}\n`);
    }
    return 1;
  }

  let databaseConfigUrl = config.database.url;
  if (!env.DATABASE_URL) {
    try {
      databaseConfigUrl = await resolveSecret(config.database.url, runEnv);
    } catch (error) {
      if (!(error instanceof SecretError)) throw error;
      fail(`database.url: ${error.message}`);
      err.write(`  fix: set the variable or file it refers to, or set DATABASE_URL\n`);
      return 1;
    }
  }

  // 3. Signals. Installed before dependencies start, so a Ctrl-C during a slow embedded
  // PostgreSQL start still cleans up what was started.
  const started: RunningDependency[] = [];
  let supervisor: Supervisor | undefined;
  let signals = 0;
  let requestStop: () => void = () => {};
  const stopRequested = new Promise<void>((r) => (requestStop = r));
  const onSignal = (sig: NodeJS.Signals) => {
    signals++;
    if (signals === 1) {
      out.write("\n");
      say(`${sig}: stopping${supervisor ? " the services" : ""} (press Ctrl-C again to kill everything at once)`);
      requestStop();
    } else {
      say(`${sig} again: killing everything now`);
      supervisor?.kill();
      for (const dep of started) void dep.stop(true);
    }
  };
  // `postroom reload` sends SIGUSR2: the services that re-read their config on SIGHUP get one.
  // Not SIGHUP itself: a closed terminal sends that, and then up should stop, not carry on.
  const onReload = () => {
    const sent = supervisor?.signalServices("SIGHUP", RELOADABLE) ?? [];
    say(sent.length > 0 ? `reload: sent SIGHUP to ${sent.join(", ")} (archive quota, thresholds and reserve re-read from the config)` : "reload: no service that reloads is running");
  };
  process.on("SIGUSR2", onReload);
  const killOnExit = () => supervisor?.kill(); // last resort if we die without stopping them
  const handled = ["SIGINT", "SIGTERM", "SIGHUP"] as const;
  for (const sig of handled) process.on(sig, onSignal);
  process.on("exit", killOnExit);

  const stopDependencies = async () => {
    // Reverse start order: PostgreSQL, then NATS. Only ones we started do anything.
    for (const dep of [...started].reverse()) {
      if (dep.source !== "started") continue;
      await dep.stop(signals > 1).catch((error: unknown) => say(`could not stop ${redactUrl(dep.url)}: ${(error as Error).message}`));
      say(`stopped ${redactUrl(dep.url)}`);
    }
  };

  try {
    // 4. Dependencies.
    // Created only when a server of our own needs it.
    const dataDir = resolve(cwd, args["data-dir"] ?? ".postroom");
    let nats: RunningDependency;
    let database: RunningDependency;
    try {
      nats = await discoverNats({ envUrl: env.NATS_URL, configUrl: config.nats.url, dataDir, log: say });
      started.push(nats);
      if (signals > 0) return 0;
      database = await discoverPostgres({ envUrl: env.DATABASE_URL, configUrl: databaseConfigUrl, dataDir, log: say });
      started.push(database);
      if (signals > 0) return 0;
    } catch (error) {
      if (!(error instanceof DependencyError)) throw error;
      fail(error.message);
      err.write(`  fix: ${error.fix}\n`);
      return 1;
    }

    // 5. The database's roles, when the services have users of their own (database.users): up
    // is the set-up step here, with the owner's connection — the migrations, then each service's
    // role and grants from packages/db's ownership map. The services then apply no migration, and
    // their DATABASE_URL carries no credentials: they log in as their own users.
    const roles = rolesConfigured(config, runEnv);
    if (roles) {
      try {
        const setup = await runDatabaseSetup(config, runEnv, database.url);
        say(
          `database roles: ${setup.logins.join(", ")} granted their own tables only (prefix ${setup.prefix}` +
            `${setup.migrated.length > 0 ? `; applied migration(s) ${setup.migrated.join(", ")}` : ""})`,
        );
        if (setup.unmapped.length > 0) say(`tables no service may use (not in the ownership map): ${setup.unmapped.join(", ")}`);
      } catch (error) {
        fail(`database set-up as ${redactUrl(database.url)} failed: ${(error as Error).message}`);
        err.write("  fix: database.url (or DATABASE_URL) must be the user that owns the schema and may create roles (CREATEROLE); or remove database.users\n");
        return 1;
      }
    }

    // 6. Services.
    const serviceDatabaseUrl = roles ? withCredentials(database.url, "", undefined) : database.url;
    const childEnv: NodeJS.ProcessEnv = { ...runEnv, ...options.childEnv, POSTROOM_CONFIG: configPath, NATS_URL: nats.url, DATABASE_URL: serviceDatabaseUrl };
    supervisor = new Supervisor({
      services: selected.map((name) => serviceCommand(name, root, entryPoint(name, root), childEnv)),
      output: out,
      colour,
      stopTimeoutMs: options.stopTimeoutMs ?? 10_000,
    });
    await supervisor.start();
    // Where `postroom status` (and the other commands) find this run without flags.
    const stateFile = await writeRunState(options.stateDir ?? join(cwd, ".postroom"), {
      config: configPath,
      natsUrl: nats.url,
      namespace: env.POSTROOM_NAMESPACE || config.nats.namespace,
      // The embedded cluster's URL holds only its fixed local password; an operator's URL may hold a real one.
      ...(!hasOperatorPassword(database.url) ? { databaseUrl: database.url } : {}),
      agentApi: `http://${config.agentApi.host}:${config.agentApi.port}`,
      pid: process.pid,
      startedAt: new Date().toISOString(),
      ...(options.demo ? { demo: true } : {}),
    });
    if (Object.keys(fileEnv).length > 0) say(`read ${Object.keys(fileEnv).length} variable(s) from ${shown(envFile)}`);
    // The address people need most, said by up itself rather than only in asd-bridge's log.
    if (selected.includes("asd-bridge") && config.agentApi.port !== 0) say(`agent desktop: http://${config.agentApi.host}:${config.agentApi.port} · mailbox health: pnpm postroom status`);
    say(
      `running ${selected.join(", ")} · NATS ${redactUrl(nats.url)} (${SOURCE_LABEL[nats.source]})` +
        ` · PostgreSQL ${redactUrl(database.url)} (${SOURCE_LABEL[database.source]})` +
        ` · config ${shown(configPath)} · Ctrl-C to stop`,
    );

    // Not awaited: a slow hook (the demo's seeding) must not delay a Ctrl-C.
    void Promise.resolve()
      .then(() => options.onRunning?.({ nats, database, stop: requestStop }))
      .catch((error: unknown) => say(`after start: ${(error as Error).message}`));
    await stopRequested;
    // Services first: they drain their NATS consumers and database work before the servers go.
    await supervisor.stop();
    await clearRunState(stateFile, process.pid);
    return 0;
  } finally {
    await stopDependencies();
    for (const sig of handled) process.removeListener(sig, onSignal);
    process.removeListener("SIGUSR2", onReload);
    process.removeListener("exit", killOnExit);
  }
}

function hasOperatorPassword(url: string): boolean {
  try {
    const { password } = new URL(url);
    return password !== "" && password !== EMBEDDED_PG_PASSWORD;
  } catch {
    return true;
  }
}
