import type { PostroomConfig } from "@postroom/config";
import type { ConnectOptions } from "@postroom/nats-kit";

/**
 * How an operator's command (status, auth sign-in) connects to NATS: TLS from `nats.tls`, as the
 * services, and a user of its own from NATS_USER / NATS_PASSWORD when the server wants one (the
 * services' users are theirs alone: nats.users names no user for the operator).
 */
export function operatorNatsOptions(config: PostroomConfig, name: string, env: NodeJS.ProcessEnv = process.env): ConnectOptions {
  const tls = config.nats.tls;
  return {
    url: config.nats.url,
    name,
    ...(env.NATS_USER ? { user: env.NATS_USER, password: env.NATS_PASSWORD ?? "" } : {}),
    ...(tls ? { tls: { caFile: tls.ca, certFile: tls.cert, keyFile: tls.key, verify: tls.verify } } : {}),
  };
}
