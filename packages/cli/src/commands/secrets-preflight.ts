/**
 * The secrets a configuration refers to, checked before `postroom up` (or `demo`) starts anything.
 * Without this a missing variable showed up only as token-service and the poller logging an error
 * every 20 s and the desktop answering "wrong password": the operator never saw the variable's
 * name. Only references (`env:NAME`, `file:/path`) are checked; their values are read to see that
 * they exist and are never printed.
 */
import { existsSync, readFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { resolveSecret, SecretError, type MailboxAuth, type PostroomConfig } from "@postroom/config";

/** One secret reference in the config and the service that resolves it. */
export interface SecretUse {
  /** Config path, e.g. `tenants[0].mailboxes[1].auth.password`. */
  path: string;
  /** The reference as written, e.g. `env:SUPPORT_PASSWORD`. */
  ref: string;
  /** The service that needs it at run time. */
  service: "token-service" | "asd-bridge" | "archiver" | "smtp-sender";
  /** Who it belongs to, for people: `mailbox acme/support`, `agent acme/ann`. */
  owner: string;
}

/** A reference that did not resolve, with the fix. */
export interface MissingSecret extends SecretUse {
  problem: string;
  fix: string;
}

function authRefs(auth: MailboxAuth, path: string): Array<[string, string]> {
  switch (auth.type) {
    case "password":
      return [[`${path}.password`, auth.password]];
    case "microsoft365":
      return [
        ...(auth.clientSecret === undefined ? [] : ([[`${path}.clientSecret`, auth.clientSecret]] as Array<[string, string]>)),
        ...(auth.certificate === undefined
          ? []
          : ([
              [`${path}.certificate.certificate`, auth.certificate.certificate],
              [`${path}.certificate.privateKey`, auth.certificate.privateKey],
            ] as Array<[string, string]>)),
      ];
    case "google-service-account":
      return [[`${path}.keyFile`, auth.keyFile]];
    case "microsoft-delegated":
      // A public client has no secret; its grant lives in token-service's sealed store.
      return [];
    case "google-delegated":
      // Google's desktop clients have a secret; the grant itself lives in token-service's sealed store.
      return [[`${path}.clientSecret`, auth.clientSecret]];
  }
}

/** Every env:/file: reference of the config, with the service that resolves it. Pure. */
export function secretUses(config: PostroomConfig): SecretUse[] {
  const uses: SecretUse[] = [];
  const add = (path: string, ref: string, service: SecretUse["service"], owner: string) => {
    if (ref.startsWith("env:") || ref.startsWith("file:")) uses.push({ path, ref, service, owner });
  };
  if (config.tokenStore) {
    add("tokenStore.key", config.tokenStore.key, "token-service", "the delegated-grant store");
    config.tokenStore.previousKeys.forEach((k, i) => add(`tokenStore.previousKeys[${i}]`, k, "token-service", "the delegated-grant store"));
  }
  config.tenants.forEach((tenant, t) => {
    config.tenants[t]!.mailboxes.forEach((mailbox, m) => {
      const base = `tenants[${t}].mailboxes[${m}]`;
      const owner = `mailbox ${tenant.id}/${mailbox.id}`;
      for (const [path, ref] of authRefs(mailbox.auth, `${base}.auth`)) add(path, ref, "token-service", owner);
      if (mailbox.smtp?.auth) for (const [path, ref] of authRefs(mailbox.smtp.auth, `${base}.smtp.auth`)) add(path, ref, "token-service", owner);
    });
    tenant.agents.forEach((agent, a) => add(`tenants[${t}].agents[${a}].password`, agent.password, "asd-bridge", `agent ${tenant.id}/${agent.id}`));
    if (tenant.acd.type === "webhook") add(`tenants[${t}].acd.signingSecret`, tenant.acd.signingSecret, "asd-bridge", `tenant ${tenant.id}'s webhook ACD`);
  });
  for (const [service, user] of Object.entries(config.database.users ?? {}) as [SecretUse["service"], { password?: string; url?: string }][]) {
    if (user.password !== undefined) add(`database.users.${service}.password`, user.password, service, `${service}'s database user`);
    if (user.url !== undefined) add(`database.users.${service}.url`, user.url, service, `${service}'s database user`);
  }
  return uses;
}

/**
 * The references among `uses` that do not resolve in `env`, each with the variable or file, the
 * config file it is written in, and where to set it (`envFile`: the postroom.env beside the config).
 */
export async function missingSecrets(uses: readonly SecretUse[], env: NodeJS.ProcessEnv, configShown: string, envFileShown: string): Promise<MissingSecret[]> {
  const missing: MissingSecret[] = [];
  for (const use of uses) {
    try {
      await resolveSecret(use.ref, env);
    } catch (error) {
      if (!(error instanceof SecretError)) throw error;
      const name = use.ref.slice(4);
      const fix = use.ref.startsWith("env:")
        ? `export ${name}=… before starting, or add the line ${name}=… to ${envFileShown}`
        : `create ${use.ref.slice(5)} holding the secret (readable by this user), or change ${use.path} in ${configShown}`;
      missing.push({ ...use, problem: `${error.message}; ${use.path} (${use.owner}) in ${configShown} refers to it`, fix });
    }
  }
  return missing;
}

/** The env file `up` reads beside a config: `postroom.env` (what `config import-softdial` writes). */
export function envFileFor(configPath: string): string {
  return join(dirname(configPath), "postroom.env");
}

/**
 * Reads `NAME=value` lines (the format `formatEnvFile` writes: bare, '…' or "…" with \" and \\
 * escapes; `#` comments). Returns {} when the file does not exist.
 */
export function readEnvFile(path: string): Record<string, string> {
  if (!existsSync(path)) return {};
  const result: Record<string, string> = {};
  for (const raw of readFileSync(path, "utf8").split(/\r?\n/)) {
    const line = raw.trim();
    if (line === "" || line.startsWith("#")) continue;
    const match = /^(?:export\s+)?([A-Za-z_][A-Za-z0-9_]*)=(.*)$/.exec(line);
    if (!match) continue;
    let value = match[2]!;
    if (value.length >= 2 && value.startsWith("'") && value.endsWith("'")) value = value.slice(1, -1);
    else if (value.length >= 2 && value.startsWith('"') && value.endsWith('"')) value = value.slice(1, -1).replace(/\\(["\\])/g, "$1");
    result[match[1]!] = value;
  }
  return result;
}
