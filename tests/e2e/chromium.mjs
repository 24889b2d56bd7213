// Debian's Chromium for the browser drivers, launched by playwright-core with nothing but
// loopback reachable.

import { chromium } from 'playwright-core'

export const CHROMIUM = process.env.E2E_CHROMIUM ?? '/usr/bin/chromium'

export function launchChromium() {
  return chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    // playwright-core gives every launch a fresh temporary --user-data-dir and removes it.
    args: [
      '--headless',
      '--no-sandbox',
      '--disable-gpu',
      '--disable-quic',
      '--no-first-run',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
      // Nothing but loopback: a page that reached for a CDN would fail to load.
      '--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1',
    ],
  })
}
