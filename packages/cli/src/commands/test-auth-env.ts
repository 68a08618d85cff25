// Environment checks of `postroom test-auth`: DNS, TCP and TLS to each host, and the local clock
// against the identity platform's Date header. They run before any credential is used, so a
// firewall or a broken proxy is named as such instead of surfacing as an opaque login failure.
import { certificateErrorCode, certificateExplanation, peerIssuer } from "./test-auth-tls.js";
import { lookup } from "node:dns/promises";
import { connect as tcpConnect, isIP, type Socket } from "node:net";
import { connect as tlsConnect } from "node:tls";
import type { StepResult } from "./test-auth-report.js";

/** A host the run needs to reach. */
export interface Endpoint {
  /** What it is, for the verdict line: "identity platform", "IMAP", "POP3", "SMTP". */
  role: string;
  host: string;
  port: number;
  /** true: TLS from the first byte (HTTPS, IMAPS, POP3S, SMTPS) — checked here; STARTTLS is checked at login. */
  implicitTls: boolean;
  /** Verify the server's certificate (default true). */
  verifyCertificate?: boolean;
}

const TIMEOUT_MS = 5_000;

/** DNS, TCP and (implicit) TLS to one endpoint: one step result per check, stopping at the first failure. */
export async function checkEndpoint(e: Endpoint): Promise<StepResult[]> {
  const results: StepResult[] = [];
  const name = `${e.role} ${e.host}:${e.port}`;
  let address = e.host;
  if (isIP(e.host) === 0) {
    try {
      const found = await lookup(e.host);
      address = found.address;
      results.push({ step: "dns", verdict: "pass", summary: `${e.role}: ${e.host} resolves to ${address}` });
    } catch (error) {
      results.push({
        step: "dns",
        verdict: "fail",
        summary: `${e.role}: ${e.host} does not resolve (${(error as NodeJS.ErrnoException).code ?? (error as Error).message})`,
        explanation: { code: "DNS", meaning: "the host name is unknown to this machine's resolver", fix: `check the spelling of ${e.host}, the DNS servers of this machine, and any split-horizon DNS or proxy requirement` },
      });
      return results;
    }
  } else {
    results.push({ step: "dns", verdict: "pass", summary: `${e.role}: ${e.host} is an IP address` });
  }
  try {
    const socket = await openTcp(address, e.port);
    socket.destroy();
    results.push({ step: "tcp", verdict: "pass", summary: `${name} accepts connections` });
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code ?? "error";
    results.push({
      step: "tcp",
      verdict: "fail",
      summary: `${name} is unreachable (${code})`,
      explanation: {
        code,
        meaning: code === "ECONNREFUSED" ? "nothing listens on that port" : "no answer within 5 s",
        fix: `check host and port in the config (${e.host}:${e.port}) and that a firewall or proxy lets this machine connect to it`,
      },
    });
    return results;
  }
  if (!e.implicitTls) return results;
  try {
    const protocol = await openTls(e.host, address, e.port, e.verifyCertificate ?? true);
    results.push({ step: "tls", verdict: "pass", summary: `${name} TLS handshake (${protocol}) with a trusted certificate` });
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code ?? "error";
    const certCode = certificateErrorCode(error);
    const certificate = certCode === undefined ? undefined : certificateExplanation(certCode, e.host, e.port, await peerIssuer(e.host, address, e.port));
    results.push({
      step: "tls",
      verdict: "fail",
      summary: `${name} TLS failed: ${(error as Error).message}`,
      explanation: certificate ?? {
        code,
        meaning: "the TLS handshake failed before any certificate was checked",
        fix: "check the host name, port and TLS mode (implicit TLS ports: 993, 995, 465, 443; 143, 110 and 587 use STARTTLS)",
      },
    });
  }
  return results;
}

function openTcp(host: string, port: number): Promise<Socket> {
  return new Promise((resolve, reject) => {
    const socket = tcpConnect({ host, port });
    const timer = setTimeout(() => {
      socket.destroy();
      reject(Object.assign(new Error("timed out"), { code: "ETIMEDOUT" }));
    }, TIMEOUT_MS);
    socket.once("connect", () => {
      clearTimeout(timer);
      resolve(socket);
    });
    socket.once("error", (error) => {
      clearTimeout(timer);
      reject(error);
    });
  });
}

function openTls(servername: string, address: string, port: number, verify: boolean): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = tlsConnect({ host: address, port, servername: isIP(servername) === 0 ? servername : undefined, rejectUnauthorized: verify });
    const timer = setTimeout(() => {
      socket.destroy();
      reject(Object.assign(new Error("TLS handshake timed out"), { code: "ETIMEDOUT" }));
    }, TIMEOUT_MS);
    socket.once("secureConnect", () => {
      clearTimeout(timer);
      const protocol = socket.getProtocol() ?? "TLS";
      socket.destroy();
      resolve(protocol);
    });
    socket.once("error", (error) => {
      clearTimeout(timer);
      reject(error);
    });
  });
}

/**
 * Compares the local clock with the identity platform's `Date` header. Tokens carry nbf/exp and
 * client assertions carry iat/exp; a clock off by minutes makes them fail in confusing ways.
 */
export async function checkClock(url: string, now: () => number = Date.now): Promise<StepResult> {
  try {
    const before = now();
    const response = await fetch(url, { method: "GET", signal: AbortSignal.timeout(TIMEOUT_MS) });
    await response.body?.cancel();
    const after = now();
    const date = response.headers.get("date");
    if (date === null) return { step: "clock", verdict: "warn", summary: "the identity platform sent no Date header; clock not checked" };
    // The header has one-second resolution: compare with the middle of the round trip.
    const skewMs = Date.parse(date) - (before + after) / 2;
    const skew = Math.round(skewMs / 1000);
    if (Math.abs(skewMs) > 300_000) {
      return {
        step: "clock",
        verdict: "fail",
        summary: `the local clock is ${Math.abs(skew)} s ${skew > 0 ? "behind" : "ahead of"} the identity platform`,
        explanation: { code: "clock-skew", meaning: "tokens and client assertions are refused when the clock is off by more than about 5 minutes", fix: "synchronise the clock (timedatectl set-ntp true, or the host's NTP service)" },
      };
    }
    return { step: "clock", verdict: Math.abs(skewMs) > 60_000 ? "warn" : "pass", summary: `local clock within ${Math.max(1, Math.abs(skew))} s of the identity platform's Date` };
  } catch (error) {
    return { step: "clock", verdict: "warn", summary: `could not read the identity platform's Date header: ${(error as Error).message}` };
  }
}
