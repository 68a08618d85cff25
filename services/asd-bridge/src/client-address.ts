import type { IncomingMessage } from "node:http";
import { BlockList, isIP } from "node:net";

/**
 * The address of the client behind a request, for the login limits and the audit trail: the
 * socket's peer, unless that peer is one of `trustedProxies` (addresses or CIDR ranges), in
 * which case it is the last address the proxy appended to X-Forwarded-For. Only the last one:
 * everything before it was written by whoever sent the request, and a client that could choose
 * its address could step around every per-address limit. Without trusted proxies the header is
 * never read.
 */
export class ClientAddress {
  readonly #proxies = new BlockList();
  readonly #any: boolean;

  constructor(trustedProxies: readonly string[]) {
    for (const entry of trustedProxies) {
      const [address, bits] = entry.split("/") as [string, string | undefined];
      const family = isIP(address) === 6 ? "ipv6" : "ipv4";
      if (bits === undefined) this.#proxies.addAddress(address, family);
      else this.#proxies.addSubnet(address, Number(bits), family);
    }
    this.#any = trustedProxies.length > 0;
  }

  of(req: IncomingMessage): string {
    const peer = plain(req.socket.remoteAddress ?? "unknown");
    if (!this.#any || isIP(peer) === 0 || !this.#proxies.check(peer, isIP(peer) === 6 ? "ipv6" : "ipv4")) return peer;
    const header = req.headers["x-forwarded-for"];
    const last = (Array.isArray(header) ? header.join(",") : (header ?? "")).split(",").map((s) => s.trim()).filter(Boolean).pop();
    return last && isIP(plain(last)) !== 0 ? plain(last) : peer;
  }
}

/** An IPv4 peer on a dual-stack socket without its `::ffff:` prefix. */
function plain(a: string): string {
  return a.startsWith("::ffff:") && a.includes(".") ? a.slice(7) : a;
}
