/**
 * Load-balancing algorithms. Each picks one backend from the set the pool
 * hands it (healthy and not ejected, or every backend in panic mode), so that
 * health, outlier ejection and panic live in one place (`pool.ts`) and the
 * algorithms stay pure and table-testable.
 *
 * - `round-robin`: rotation over the set; weights other than 0 are ignored.
 * - `weighted-round-robin`: nginx's smooth weighted round robin: for weights
 *   5,1,1 the order is a a b a c a a, never five a's in a row.
 * - `least-outstanding`: power of two choices (Mitzenmacher): two random
 *   backends, the one with fewer requests in flight per unit of weight wins.
 *   Near-best spreading without scanning the pool or herding on one backend.
 * - `consistent-hash`: Maglev (Eisenbud et al., NSDI 2016): a lookup table of a
 *   prime size M filled by each backend's permutation; a change of the set
 *   moves about 1/N of the keys, and lookup is one array read.
 */
import { fmix32, hash32 } from "./hash";

/** What a balancer needs from a backend. */
export interface Weighted {
  readonly id: string;
  /** Configured weight, > 0 (Maglev uses it: slow start must not reshuffle keys). */
  weight: number;
  /** Weight after slow start, > 0. */
  effectiveWeight: number;
  /** Requests in flight. */
  outstanding: number;
  /** Smooth weighted round robin's running score. */
  current: number;
}

export interface Balancer<B extends Weighted> {
  /**
   * One backend of `set` (not empty), not `exclude` unless it is the only one.
   * `key` is the request's 32-bit hash key (consistent hashing only);
   * `weighted` says that effective weights differ (slow start in progress).
   */
  pick(set: readonly B[], version: number, key: number, exclude: B | undefined, weighted: boolean): B;
}

export class RoundRobin<B extends Weighted> implements Balancer<B> {
  private next = 0;
  private readonly swrr = new SmoothWeighted<B>();

  pick(set: readonly B[], version: number, key: number, exclude: B | undefined, weighted: boolean): B {
    // While a backend ramps up (slow start) the rotation must honour its
    // reduced weight: fall back to smooth weighted over the effective weights.
    if (weighted) return this.swrr.pick(set, version, key, exclude);
    const n = set.length;
    let b = set[this.next++ % n]!;
    if (this.next >= 0x3fffffff) this.next = 0;
    if (b === exclude && n > 1) b = set[this.next++ % n]!;
    return b;
  }
}

export class SmoothWeighted<B extends Weighted> implements Balancer<B> {
  pick(set: readonly B[], _version: number, _key: number, exclude: B | undefined): B {
    // nginx ngx_http_upstream_get_peer: every backend gains its weight, the
    // highest score wins and pays the total back.
    let best: B | undefined;
    let total = 0;
    for (let i = 0; i < set.length; i++) {
      const b = set[i]!;
      if (b === exclude && set.length > 1) continue;
      b.current += b.effectiveWeight;
      total += b.effectiveWeight;
      if (best === undefined || b.current > best.current) best = b;
    }
    best!.current -= total;
    return best!;
  }
}

export class LeastOutstanding<B extends Weighted> implements Balancer<B> {
  constructor(private readonly random: () => number = Math.random) {}

  pick(set: readonly B[], _version: number, _key: number, exclude: B | undefined): B {
    const n = set.length;
    if (n === 1) return set[0]!;
    if (n === 2 && exclude) return set[0] === exclude ? set[1]! : set[0]!;
    let i = Math.floor(this.random() * n);
    let j = Math.floor(this.random() * (n - 1));
    if (j >= i) j++;
    let a = set[i]!;
    let b = set[j]!;
    if (exclude) {
      // Replace the excluded one by its neighbour that is not the other choice.
      if (a === exclude) {
        i = nextOther(i, j, n);
        a = set[i]!;
      }
      if (b === exclude) {
        j = nextOther(j, i, n);
        b = set[j]!;
      }
    }
    // Compare outstanding / weight without dividing: oa * wb vs ob * wa.
    const sa = (a.outstanding + 1) * b.effectiveWeight;
    const sb = (b.outstanding + 1) * a.effectiveWeight;
    return sb < sa ? b : a;
  }
}

function nextOther(i: number, other: number, n: number): number {
  let k = (i + 1) % n;
  if (k === other) k = (k + 1) % n;
  return k;
}

/** Maglev table sizes: prime, and at least 100 x the backends for even shares (the paper's advice). */
function tableSize(n: number): number {
  if (n <= 650) return 65537;
  return 131071; // 2^17 - 1, prime; the config allows at most 1000 backends
}

export class Maglev<B extends Weighted> implements Balancer<B> {
  private table: Int32Array = new Int32Array(0);
  private members: readonly B[] = [];
  private builtFor = -1;

  pick(set: readonly B[], version: number, key: number, exclude: B | undefined): B {
    if (version !== this.builtFor || set !== this.members) this.build(set, version);
    const m = this.table.length;
    let slot = key % m;
    let b = set[this.table[slot]!]!;
    // A retry must go elsewhere: walk the table to the next other backend,
    // which is as stable under set changes as the first pick.
    for (let tries = 0; b === exclude && set.length > 1 && tries < m; tries++) {
      slot = slot + 1 === m ? 0 : slot + 1;
      b = set[this.table[slot]!]!;
    }
    return b;
  }

  /** The backend that owns `key` (exposed for tests and for sticky fallbacks). */
  lookup(set: readonly B[], version: number, key: number): B {
    return this.pick(set, version, key, undefined);
  }

  private build(set: readonly B[], version: number): void {
    // Maglev population (paper section 3.4), weighted: each round, a backend
    // earns weight/maxWeight of a turn, and takes its next preferred free slot
    // per whole turn earned.
    const n = set.length;
    const m = tableSize(n);
    const table = new Int32Array(m).fill(-1);
    const offset = new Array<number>(n);
    const skip = new Array<number>(n);
    const next = new Array<number>(n).fill(0);
    const credit = new Array<number>(n).fill(0);
    let maxWeight = 0;
    for (let i = 0; i < n; i++) {
      const b = set[i]!;
      offset[i] = hash32(b.id, 0x9e3779b9) % m;
      skip[i] = (fmix32(hash32(b.id, 0x7f4a7c15)) % (m - 1)) + 1;
      maxWeight = Math.max(maxWeight, b.weight);
    }
    let filled = 0;
    while (filled < m) {
      for (let i = 0; i < n && filled < m; i++) {
        credit[i]! += set[i]!.weight / maxWeight;
        while (credit[i]! >= 1 && filled < m) {
          credit[i]! -= 1;
          let c = (offset[i]! + next[i]! * skip[i]!) % m;
          while (table[c] !== -1) {
            next[i]!++;
            c = (offset[i]! + next[i]! * skip[i]!) % m;
          }
          table[c] = i;
          next[i]!++;
          filled++;
        }
      }
    }
    this.table = table;
    this.members = set;
    this.builtFor = version;
  }
}

export type Algorithm = "round-robin" | "weighted-round-robin" | "least-outstanding" | "consistent-hash";

export function createBalancer<B extends Weighted>(algorithm: Algorithm): Balancer<B> {
  switch (algorithm) {
    case "round-robin":
      return new RoundRobin<B>();
    case "weighted-round-robin":
      return new SmoothWeighted<B>();
    case "least-outstanding":
      return new LeastOutstanding<B>();
    case "consistent-hash":
      return new Maglev<B>();
  }
}
