import { isSecretRef, resolveSecret, type PostroomConfig } from "@postroom/config";
import { DATABASE_SERVICES, type DatabaseLogin, type DatabaseService } from "@postroom/db";

/** How a service reaches PostgreSQL. */
export interface DatabaseConnection {
  /** The connection URL, password included: never logged. */
  url: string;
  /**
   * True when the service logs in as its own user (database.users, or DATABASE_USER in a pod):
   * that role may not change the schema, so the service applies no migration and waits until
   * the set-up step (run with the owner's connection) has applied them.
   */
  ownRole: boolean;
}

/** `url` with its user and password replaced (both URL-encoded as the URL needs). */
export function withCredentials(url: string, user: string, password: string | undefined): string {
  const u = new URL(url);
  u.username = encodeURIComponent(user);
  u.password = password !== undefined ? encodeURIComponent(password) : "";
  return u.toString();
}

async function baseUrl(config: PostroomConfig, env: NodeJS.ProcessEnv): Promise<string> {
  const url = config.database.url;
  return isSecretRef(url) ? resolveSecret(url, env) : url;
}

/**
 * The connection of one service: DATABASE_USER / DATABASE_PASSWORD in a pod (on database.url's
 * server and database, as NATS_USER / NATS_PASSWORD do for NATS), else `database.users.<service>`
 * of the config (user + password reference, or a whole URL reference), else database.url — the
 * single connection every service shared before roles, which still migrates at start-up.
 */
export async function databaseConnectionFor(config: PostroomConfig, service: DatabaseService, env: NodeJS.ProcessEnv): Promise<DatabaseConnection> {
  if (env.DATABASE_USER) {
    return { url: withCredentials(await baseUrl(config, env), env.DATABASE_USER, env.DATABASE_PASSWORD || undefined), ownRole: true };
  }
  const own = config.database.users?.[service];
  if (own?.url !== undefined) return { url: await resolveSecret(own.url, env), ownRole: true };
  if (own?.user !== undefined) {
    const password = own.password !== undefined ? await resolveSecret(own.password, env) : undefined;
    return { url: withCredentials(await baseUrl(config, env), own.user, password), ownRole: true };
  }
  return { url: await baseUrl(config, env), ownRole: false };
}

const envKey = (service: DatabaseService) => service.toUpperCase().replaceAll("-", "_");

/**
 * The login users the set-up creates, with their passwords: from `database.users`, and for the
 * chart's Job (which has no config of users, only a Secret) from DATABASE_USER_<SERVICE> /
 * DATABASE_PASSWORD_<SERVICE> (ARCHIVER, ASD_BRIDGE, SMTP_SENDER), which win.
 */
export async function databaseLogins(config: PostroomConfig, env: NodeJS.ProcessEnv): Promise<DatabaseLogin[]> {
  const logins: DatabaseLogin[] = [];
  for (const service of DATABASE_SERVICES) {
    const user = env[`DATABASE_USER_${envKey(service)}`];
    if (user) {
      logins.push({ service, user, password: env[`DATABASE_PASSWORD_${envKey(service)}`] || undefined });
      continue;
    }
    const own = config.database.users?.[service];
    if (own?.url !== undefined) {
      const u = new URL(await resolveSecret(own.url, env));
      logins.push({ service, user: decodeURIComponent(u.username), password: u.password ? decodeURIComponent(u.password) : undefined });
    } else if (own?.user !== undefined) {
      logins.push({ service, user: own.user, password: own.password !== undefined ? await resolveSecret(own.password, env) : undefined });
    }
  }
  return logins;
}

/** True when the configuration (or the set-up's environment) gives the services their own database users. */
export function rolesConfigured(config: PostroomConfig, env: NodeJS.ProcessEnv): boolean {
  return config.database.users !== undefined || DATABASE_SERVICES.some((s) => Boolean(env[`DATABASE_USER_${envKey(s)}`]));
}
