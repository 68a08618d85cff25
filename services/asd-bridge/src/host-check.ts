import { isIP } from "node:net";

/**
 * Which Host header values the agent API answers: the defence against DNS rebinding. A page on
 * `evil.example` whose name is re-pointed at 127.0.0.1 reaches a loopback API from the victim's
 * browser as same-origin, but its requests still say `Host: evil.example`; refusing names we were
 * not told about ends the attack whatever the browser does.
 *
 * Default (no `allowedHosts`): the listen host, the loopback names and publicUrl's host. When the
 * API listens on every address (0.0.0.0 or ::) it cannot know its own names, so then any IP
 * address is also accepted — an IP literal is safe from rebinding, because the browser's origin is
 * then that address itself — and names must be listed. Comparison ignores case and the port.
 */
export class HostCheck {
  readonly #allowed: Set<string>;
  readonly #anyIp: boolean;

  constructor(o: { host: string; publicUrl?: string | undefined; allowedHosts?: string[] | undefined }) {
    const wildcard = o.host === "0.0.0.0" || o.host === "::" || o.host === "[::]";
    if (o.allowedHosts) {
      this.#allowed = new Set(o.allowedHosts.map(normalise));
      this.#anyIp = false;
    } else {
      this.#allowed = new Set(["localhost", "127.0.0.1", "::1", ...(wildcard ? [] : [normalise(o.host)])]);
      this.#anyIp = wildcard;
    }
    if (o.publicUrl) this.#allowed.add(normalise(new URL(o.publicUrl).hostname));
  }

  /** The names and addresses accepted (for the log at start and the refusal's fix). */
  get allowed(): string[] {
    return [...this.#allowed, ...(this.#anyIp ? ["any IP address"] : [])];
  }

  /** Whether a request with this Host header is answered. A missing header is refused. */
  allows(header: string | undefined): boolean {
    if (!header) return false;
    const host = hostOf(header);
    if (host === undefined) return false;
    if (this.#allowed.has(host)) return true;
    return this.#anyIp && isIP(host) !== 0;
  }
}

/** The host part of a Host header (`name`, `name:port`, `[v6]`, `[v6]:port`), lower-case, or undefined when malformed. */
export function hostOf(header: string): string | undefined {
  const h = header.trim().toLowerCase();
  const v6 = /^\[([0-9a-f:.]+)\](?::\d{1,5})?$/.exec(h);
  if (v6) return v6[1];
  const named = /^([a-z0-9._-]+)(?::\d{1,5})?$/.exec(h);
  return named?.[1]?.replace(/\.$/, "");
}

function normalise(host: string): string {
  return host.trim().toLowerCase().replace(/^\[|\]$/g, "").replace(/\.$/, "");
}
