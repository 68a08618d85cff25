/**
 * What to do about a certificate the client did not trust. test-auth used to answer every TLS
 * failure with "check host, port and TLS mode", which sends an operator the wrong way when the
 * connection worked and only the certificate was refused. The fix depends on why: a CA this
 * machine does not know (a company CA or an intercepting proxy: NODE_EXTRA_CA_CERTS), a server
 * that does not send its intermediate certificates (fix the server's chain), a name mismatch, or
 * an expired certificate.
 */
import { connect as tlsConnect, type DetailedPeerCertificate, type PeerCertificate } from "node:tls";
import { isIP } from "node:net";
import type { Explanation } from "./test-auth-report.js";

/** The OpenSSL verification codes Node puts on `error.code`, by what the operator should do. */
const UNKNOWN_CA = new Set(["SELF_SIGNED_CERT_IN_CHAIN", "DEPTH_ZERO_SELF_SIGNED_CERT", "UNABLE_TO_GET_ISSUER_CERT_LOCALLY", "CERT_UNTRUSTED"]);
const INCOMPLETE_CHAIN = new Set(["UNABLE_TO_VERIFY_LEAF_SIGNATURE", "UNABLE_TO_GET_ISSUER_CERT"]);
const EXPIRED = new Set(["CERT_HAS_EXPIRED", "CERT_NOT_YET_VALID"]);
const WRONG_NAME = new Set(["ERR_TLS_CERT_ALTNAME_INVALID", "HOSTNAME_MISMATCH"]);

/** The certificate error code in an error (Node's, or one wrapped by imapflow / nodemailer), if any. */
export function certificateErrorCode(error: unknown): string | undefined {
  for (let e = error as { code?: unknown; cause?: unknown; message?: unknown } | undefined, depth = 0; e && depth < 4; e = e.cause as typeof e, depth++) {
    const code = typeof e.code === "string" ? e.code : undefined;
    if (code && (UNKNOWN_CA.has(code) || INCOMPLETE_CHAIN.has(code) || EXPIRED.has(code) || WRONG_NAME.has(code))) return code;
    const message = typeof e.message === "string" ? e.message : "";
    if (/self[- ]signed certificate/i.test(message)) return "SELF_SIGNED_CERT_IN_CHAIN";
    if (/unable to verify the first certificate/i.test(message)) return "UNABLE_TO_VERIFY_LEAF_SIGNATURE";
    if (/unable to get local issuer certificate/i.test(message)) return "UNABLE_TO_GET_ISSUER_CERT_LOCALLY";
    if (/certificate has expired/i.test(message)) return "CERT_HAS_EXPIRED";
    if (/does not match certificate's altnames|Hostname\/IP does not match/i.test(message)) return "ERR_TLS_CERT_ALTNAME_INVALID";
  }
  return undefined;
}

/** Who issued the certificate a server presents, e.g. `"Contoso Proxy CA" (issuer of mail.contoso.com)`. */
export interface IssuerFacts {
  subject: string;
  issuer: string;
  /** The top certificate the server sent (the CA an operator would have to trust). */
  root: string;
}

/**
 * The explanation for a certificate failure with `code` at `host:port`, or undefined when `code`
 * is no certificate problem. `issuer` (from {@link peerIssuer}) names the CA when known.
 */
export function certificateExplanation(code: string, host: string, port: number, issuer?: IssuerFacts): Explanation | undefined {
  const ca = issuer ? `"${issuer.root}"` : "the CA that issued it";
  if (UNKNOWN_CA.has(code)) {
    return {
      code,
      meaning: `the connection to ${host}:${port} works, but its certificate${issuer ? ` (issued by "${issuer.issuer}")` : ""} is signed by a CA this machine does not trust: a company CA, a TLS-inspecting proxy, or a self-signed server`,
      fix: `give Postroom ${ca}'s certificate: NODE_EXTRA_CA_CERTS=/path/to/ca.pem (set for postroom and its services), or install it in the system's trust store; the port and TLS mode are right`,
    };
  }
  if (INCOMPLETE_CHAIN.has(code)) {
    return {
      code,
      meaning: `${host}:${port} sent its own certificate without the intermediate certificates that link it to a trusted CA`,
      fix: `fix the server's certificate chain (serve the full chain, e.g. fullchain.pem); until then NODE_EXTRA_CA_CERTS=/path/to/intermediate.pem works around it`,
    };
  }
  if (EXPIRED.has(code)) {
    return { code, meaning: `the certificate of ${host}:${port} is outside its validity dates`, fix: "renew the server's certificate (or check this machine's clock)" };
  }
  if (WRONG_NAME.has(code)) {
    return {
      code,
      meaning: `the certificate of ${host}:${port}${issuer ? ` is for "${issuer.subject}" and` : ""} does not name ${host}`,
      fix: "use the host name the certificate is issued for in the config (not an IP address or an alias)",
    };
  }
  return undefined;
}

function name(cert: PeerCertificate | undefined): string {
  if (!cert) return "unknown";
  const cn = cert.subject?.CN;
  const o = cert.subject?.O;
  return (Array.isArray(cn) ? cn[0] : cn) ?? (Array.isArray(o) ? o[0] : o) ?? "unknown";
}

/**
 * Reads the chain an implicit-TLS server presents, without trusting it, to name its CA. Best
 * effort: undefined when the handshake fails for another reason or takes over `timeoutMs`.
 */
export function peerIssuer(host: string, address: string, port: number, timeoutMs = 5000): Promise<IssuerFacts | undefined> {
  return new Promise((resolve) => {
    const socket = tlsConnect({ host: address, port, servername: isIP(host) === 0 ? host : undefined, rejectUnauthorized: false });
    const timer = setTimeout(() => {
      socket.destroy();
      resolve(undefined);
    }, timeoutMs);
    socket.once("secureConnect", () => {
      clearTimeout(timer);
      const leaf = socket.getPeerCertificate(true);
      let top: DetailedPeerCertificate = leaf;
      for (let i = 0; i < 10 && top.issuerCertificate && top.issuerCertificate !== top; i++) top = top.issuerCertificate;
      const issuerCn = leaf.issuer?.CN;
      socket.destroy();
      resolve({ subject: name(leaf), issuer: (Array.isArray(issuerCn) ? issuerCn[0] : issuerCn) ?? "unknown", root: top === leaf ? (Array.isArray(issuerCn) ? issuerCn[0] : issuerCn) ?? name(leaf) : name(top) });
    });
    socket.once("error", () => {
      clearTimeout(timer);
      resolve(undefined);
    });
  });
}
