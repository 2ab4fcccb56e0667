/*
 * ferry-workload: the test guest's workload (PID 1 of its initramfs).
 *
 * It fills `ferry.fill` bytes of RAM with a pattern it can regenerate, rewrites
 * one word in each page of the first `ferry.wss` bytes every `ferry.dirty_ms`
 * milliseconds (remembering each page's generation), and every `ferry.verify_s`
 * seconds, or when a `verify` line arrives on the console, checks every byte of
 * every page against what it must hold. Results go to the console as single
 * lines starting with "FERRY-GUEST " that tests parse (tests/integration/guest.py):
 *
 *   FERRY-GUEST ready fill=BYTES pages=N wss_pages=M dirty_ms=D verify_s=V seed=S fill_ms=T counter=K
 *   FERRY-GUEST verify begin pass=P counter=K
 *   FERRY-GUEST verify ok pass=P pages=N counter=K ms=T
 *   FERRY-GUEST verify FAIL pass=P page=X offset=O expected=E got=G bad_pages=B pages=N counter=K ms=T
 *   FERRY-GUEST corrupt page=X offset=O counter=K
 *   FERRY-GUEST status counter=K passes=P
 *   FERRY-GUEST dirty ms=D pages=M counter=K
 *   FERRY-GUEST disk ready blocks=N
 *   FERRY-GUEST disk ok blocks=N writes=W digest=HEX16
 *   FERRY-GUEST disk FAIL block=B expected_gen=G got_gen=H got_tag=T writes=W
 *   FERRY-GUEST error TEXT
 *
 * With `ferry.disk_kib=N` it also writes its first disk (/dev/vda): the
 * first N KiB are written once at start, then every `ferry.disk_ms` ms the
 * next `ferry.disk_batch` 4 KiB blocks are rewritten (O_DIRECT, so the writes
 * reach the device, not the page cache), each block's generation kept in
 * RAM. Block B of generation G is the 16 bytes (SEED << 32 | B, G) repeated.
 * `disk verify` on the console reads every block back (O_DIRECT, no write
 * meanwhile) and checks it against the generations in RAM; its digest is a
 * function of the (block, generation) pairs (see disk_digest), which a test
 * recomputes from the image file once `disk stop` ended the writes
 * ("FERRY-GUEST disk stopped writes=W").
 *
 * The counter counts dirtying rounds since boot: it lives in guest RAM, so a
 * migrated guest carries on from where it was. A verification that cannot
 * fail proves nothing: `corrupt [PAGE]` on the console (or `ferry.corrupt_at=K`,
 * when the counter reaches K) flips one byte without updating the expected
 * pattern, and `crash` panics the kernel (sysrq), so tests can show that FAIL
 * and a guest crash are both seen, and told apart.
 *
 * Single-threaded on purpose: a verification pass runs in chunks between
 * dirtying rounds, so every page is checked at a moment nobody writes it.
 */
#define _GNU_SOURCE /* O_DIRECT */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <poll.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

#define PAGE_SIZE 4096u
#define PAGE_WORDS (PAGE_SIZE / sizeof(uint64_t))
#define VERIFY_CHUNK_PAGES 256u /* 1 MiB between looks at the clock and the console */

struct params {
    uint64_t fill;     /* bytes filled with the pattern */
    uint64_t wss;      /* bytes of the working set dirtied (a prefix of fill) */
    unsigned dirty_ms; /* period of a dirtying round; 0: never */
    unsigned verify_s; /* period of a verification pass; 0: on request only */
    uint64_t seed;
    uint64_t corrupt_at; /* counter value at which to flip a byte; 0: never */
    uint64_t disk_kib;   /* KiB of /dev/vda written and verified; 0: no disk */
    unsigned disk_ms;    /* period of a disk round */
    uint64_t disk_batch; /* blocks rewritten per round */
};

static struct params P = {
    .fill = 64u << 20, .wss = 16u << 20, .dirty_ms = 100, .verify_s = 2, .seed = 1, .corrupt_at = 0,
    .disk_kib = 0, .disk_ms = 50, .disk_batch = 16,
};

static uint64_t *mem;
static uint64_t pages, wss_pages;
/* The pages a dirty round rewrites: the first wss_pages, or fewer after a
 * `dirty` command (the others keep their last generation, still checked). */
static uint64_t dirty_pages;
static uint32_t *generation; /* per working-set page: rounds that rewrote it */
static uint64_t counter;
static uint64_t passes;

static void say(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* One line, one write(): the kernel never splits it with its own output. */
static void say(const char *fmt, ...)
{
    char line[512];
    va_list ap;
    int n = snprintf(line, sizeof line, "FERRY-GUEST ");
    va_start(ap, fmt);
    n += vsnprintf(line + n, sizeof line - (size_t)n - 1, fmt, ap);
    va_end(ap);
    if (n > (int)sizeof line - 2)
        n = (int)sizeof line - 2;
    line[n++] = '\n';
    for (ssize_t off = 0; off < n;) {
        ssize_t w = write(1, line + off, (size_t)(n - off));
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return;
        off += w;
    }
}

/* Prints the error and stays alive: an init that exits panics the kernel, and a
 * test must read a bad parameter as that, not as a crash. */
static void __attribute__((noreturn)) fatal(const char *what)
{
    say("error %s", what);
    for (;;)
        pause();
}

static uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static uint64_t splitmix64(uint64_t x)
{
    x += 0x9e3779b97f4a7c15ull;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}

/* The word a dirtying round leaves in a page: which word and its value depend
 * on the page and its generation, so a stale page (an old copy) shows. */
static unsigned dirty_word(uint64_t page)
{
    return (unsigned)(page % PAGE_WORDS);
}

static uint64_t dirty_value(uint64_t page, uint32_t gen)
{
    return splitmix64(P.seed ^ (page << 32) ^ gen ^ 0x5a5a5a5a00000000ull);
}

/* xorshift64 from a per-page start: incompressible, no zero pages, and cheap
 * enough for TCG to fill hundreds of MiB in seconds. */
static uint64_t page_start(uint64_t page)
{
    uint64_t x = splitmix64(P.seed * 0x100000001b3ull + page);
    return x ? x : 1;
}

#define XORSHIFT(x) ((x) ^= (x) << 13, (x) ^= (x) >> 7, (x) ^= (x) << 17, (x))

static void fill_page(uint64_t page)
{
    uint64_t *w = mem + page * PAGE_WORDS, x = page_start(page);
    for (unsigned i = 0; i < PAGE_WORDS; i++)
        w[i] = XORSHIFT(x);
}

/* Returns the first bad word index of the page, or -1. */
static int check_page(uint64_t page, uint64_t *expected, uint64_t *got)
{
    const uint64_t *w = mem + page * PAGE_WORDS;
    uint64_t x = page_start(page);
    int dw = -1;
    uint64_t dv = 0;
    if (page < wss_pages && generation[page]) {
        dw = (int)dirty_word(page);
        dv = dirty_value(page, generation[page]);
    }
    for (unsigned i = 0; i < PAGE_WORDS; i++) {
        uint64_t want = XORSHIFT(x);
        if ((int)i == dw)
            want = dv;
        if (w[i] != want) {
            *expected = want;
            *got = w[i];
            return (int)i;
        }
    }
    return -1;
}

static void dirty_round(void)
{
    for (uint64_t p = 0; p < dirty_pages; p++) {
        uint32_t g = ++generation[p];
        if (!g) /* 0 means "never dirtied": skip it on wrap */
            g = generation[p] = 1;
        mem[p * PAGE_WORDS + dirty_word(p)] = dirty_value(p, g);
    }
    counter++;
}

static void corrupt(uint64_t page)
{
    if (page >= pages)
        page = pages / 2;
    unsigned offset = 1000; /* a byte in the middle of a word no round rewrites */
    if (dirty_word(page) == offset / 8)
        offset += 8;
    ((volatile uint8_t *)mem)[page * PAGE_SIZE + offset] ^= 0x40;
    say("corrupt page=%" PRIu64 " offset=%u counter=%" PRIu64, page, offset, counter);
}

/* ---- parameters ---- */

static int parse_size(const char *s, uint64_t *out)
{
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || end == s)
        return -1;
    switch (*end) {
    case 'K': case 'k': v <<= 10; end++; break;
    case 'M': case 'm': v <<= 20; end++; break;
    case 'G': case 'g': v <<= 30; end++; break;
    default: break;
    }
    if (*end == 'i')
        end++;
    if (*end == 'B')
        end++;
    if (*end)
        return -1;
    *out = v;
    return 0;
}

static void parse_cmdline(void)
{
    char buf[4096];
    int fd = open("/proc/cmdline", O_RDONLY);
    if (fd < 0)
        fatal("cannot open /proc/cmdline");
    ssize_t n = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (n < 0)
        fatal("cannot read /proc/cmdline");
    buf[n] = 0;
    for (char *save = NULL, *tok = strtok_r(buf, " \n", &save); tok; tok = strtok_r(NULL, " \n", &save)) {
        if (strncmp(tok, "ferry.", 6))
            continue;
        char *eq = strchr(tok, '=');
        if (!eq) {
            say("error parameter %s needs a value", tok);
            fatal("bad kernel command line");
        }
        *eq = 0;
        const char *key = tok + 6, *val = eq + 1;
        uint64_t v;
        if (parse_size(val, &v) < 0) {
            say("error ferry.%s=%s is not a number", key, val);
            fatal("bad kernel command line");
        }
        if (!strcmp(key, "fill"))
            P.fill = v;
        else if (!strcmp(key, "wss"))
            P.wss = v;
        else if (!strcmp(key, "dirty_ms"))
            P.dirty_ms = (unsigned)v;
        else if (!strcmp(key, "verify_s"))
            P.verify_s = (unsigned)v;
        else if (!strcmp(key, "seed"))
            P.seed = v;
        else if (!strcmp(key, "corrupt_at"))
            P.corrupt_at = v;
        else if (!strcmp(key, "disk_kib"))
            P.disk_kib = v;
        else if (!strcmp(key, "disk_ms"))
            P.disk_ms = (unsigned)v;
        else if (!strcmp(key, "disk_batch"))
            P.disk_batch = v;
        else {
            say("error unknown parameter ferry.%s", key);
            fatal("bad kernel command line");
        }
    }
    if (P.fill < PAGE_SIZE)
        fatal("ferry.fill must be at least one page");
    if (P.wss > P.fill)
        P.wss = P.fill;
}

/* ---- console commands ---- */

/* ---- the disk ---- */

static int disk_fd = -1;
static uint64_t disk_blocks, disk_cursor, disk_writes;
static uint64_t *disk_gen; /* per block: the generation last written */
static uint64_t *disk_buf; /* one aligned block */
static int disk_stopped;

static void disk_pattern(uint64_t block, uint64_t gen)
{
    for (unsigned i = 0; i < PAGE_WORDS; i += 2) {
        disk_buf[i] = P.seed << 32 | block;
        disk_buf[i + 1] = gen;
    }
}

static void disk_write(uint64_t block)
{
    disk_pattern(block, ++disk_gen[block]);
    if (pwrite(disk_fd, disk_buf, PAGE_SIZE, (off_t)(block * PAGE_SIZE)) != PAGE_SIZE) {
        say("error cannot write block %" PRIu64 " of /dev/vda: %s", block, strerror(errno));
        disk_stopped = 1;
        return;
    }
    disk_writes++;
}

static void disk_open(void)
{
    disk_blocks = P.disk_kib * 1024 / PAGE_SIZE;
    for (int i = 0; i < 300 && disk_fd < 0; i++) { /* the driver may still probe it */
        disk_fd = open("/dev/vda", O_RDWR | O_DIRECT);
        if (disk_fd < 0)
            usleep(100 * 1000);
    }
    disk_gen = calloc(disk_blocks, sizeof *disk_gen);
    if (disk_fd < 0 || !disk_gen || posix_memalign((void **)&disk_buf, PAGE_SIZE, PAGE_SIZE))
        fatal("cannot open /dev/vda (ferry.disk_kib)");
    for (uint64_t b = 0; b < disk_blocks; b++)
        disk_write(b);
    say("disk ready blocks=%" PRIu64, disk_blocks);
}

static void disk_round(void)
{
    for (uint64_t i = 0; i < P.disk_batch && !disk_stopped; i++) {
        disk_write(disk_cursor);
        disk_cursor = (disk_cursor + 1) % disk_blocks;
    }
}

/* What the disk holds, from the generations: a test computes the same from
 * the image's blocks. */
static uint64_t disk_digest(void)
{
    uint64_t h = 0x6665727279646b31ull;
    for (uint64_t b = 0; b < disk_blocks; b++)
        h = splitmix64(h ^ splitmix64(b << 32 ^ disk_gen[b]));
    return h;
}

static void disk_verify(void)
{
    for (uint64_t b = 0; b < disk_blocks; b++) {
        if (pread(disk_fd, disk_buf, PAGE_SIZE, (off_t)(b * PAGE_SIZE)) != PAGE_SIZE) {
            say("error cannot read block %" PRIu64 " of /dev/vda: %s", b, strerror(errno));
            return;
        }
        for (unsigned i = 0; i < PAGE_WORDS; i += 2) {
            if (disk_buf[i] != (P.seed << 32 | b) || disk_buf[i + 1] != disk_gen[b]) {
                say("disk FAIL block=%" PRIu64 " expected_gen=%" PRIu64 " got_gen=%" PRIu64
                    " got_tag=%016" PRIx64 " writes=%" PRIu64,
                    b, disk_gen[b], disk_buf[i + 1], disk_buf[i], disk_writes);
                return;
            }
        }
    }
    say("disk ok blocks=%" PRIu64 " writes=%" PRIu64 " digest=%016" PRIx64, disk_blocks, disk_writes,
        disk_digest());
}

static char cmd_buf[256];
static size_t cmd_len;

/* Reads what the console has; returns the requests it holds. */
enum { REQ_VERIFY = 1 };

static int handle_line(char *line)
{
    char *nl = strpbrk(line, "\r\n");
    if (nl)
        *nl = 0;
    if (!strcmp(line, "verify"))
        return REQ_VERIFY;
    if (!strncmp(line, "corrupt", 7) && (!line[7] || line[7] == ' ')) {
        uint64_t page = pages / 2;
        if (line[7] && parse_size(line + 8, &page) < 0)
            say("error corrupt wants a page number");
        else
            corrupt(page);
    } else if (!strcmp(line, "disk verify")) {
        if (disk_fd < 0)
            say("error no disk (ferry.disk_kib)");
        else
            disk_verify();
    } else if (!strcmp(line, "disk stop")) {
        disk_stopped = 1;
        say("disk stopped writes=%" PRIu64, disk_writes);
    } else if (!strncmp(line, "dirty ", 6)) {
        /* `dirty MS [BYTES]`: a dirty round every MS ms (0: none) of the
         * first BYTES of the working set, e.g. a calmer guest after a test
         * of a fast dirtier. */
        char *arg = line + 6, *sp = strchr(arg, ' ');
        uint64_t ms = 0, bytes = wss_pages * PAGE_SIZE;
        if (sp)
            *sp = 0;
        if (parse_size(arg, &ms) < 0 || (sp && parse_size(sp + 1, &bytes) < 0)) {
            say("error dirty wants MS [BYTES]");
        } else {
            P.dirty_ms = (unsigned)ms;
            dirty_pages = bytes / PAGE_SIZE < wss_pages ? bytes / PAGE_SIZE : wss_pages;
            say("dirty ms=%u pages=%" PRIu64 " counter=%" PRIu64, P.dirty_ms, dirty_pages, counter);
        }
    } else if (!strcmp(line, "status")) {
        say("status counter=%" PRIu64 " passes=%" PRIu64, counter, passes);
    } else if (!strcmp(line, "crash")) {
        say("crash requested");
        int fd = open("/proc/sysrq-trigger", O_WRONLY);
        if (fd < 0 || write(fd, "c", 1) != 1)
            say("error cannot write /proc/sysrq-trigger");
        if (fd >= 0)
            close(fd);
    } else if (line[0]) {
        say("error unknown command '%.64s' (verify, corrupt [PAGE], dirty MS [BYTES], status, crash, disk verify, disk stop)", line);
    }
    return 0;
}

static int read_console(void)
{
    int req = 0;
    char chunk[128];
    ssize_t n = read(0, chunk, sizeof chunk);
    for (ssize_t i = 0; i < n; i++) {
        if (chunk[i] == '\n' || chunk[i] == '\r') {
            cmd_buf[cmd_len] = 0;
            req |= handle_line(cmd_buf);
            cmd_len = 0;
        } else if (cmd_len < sizeof cmd_buf - 1) {
            cmd_buf[cmd_len++] = chunk[i];
        }
    }
    return req;
}

static void quiet_console(void)
{
    struct termios t;
    if (tcgetattr(0, &t) == 0) {
        t.c_lflag &= ~(tcflag_t)(ECHO | ECHONL);
        t.c_lflag |= ICANON;
        tcsetattr(0, TCSANOW, &t);
    }
    fcntl(0, F_SETFL, fcntl(0, F_GETFL) | O_NONBLOCK);
}

/* ---- main loop ---- */

struct pass {
    int active;
    uint64_t next_page, bad_pages, first_bad, started_ms;
    int first_word;
    uint64_t expected, got;
};

static void begin_pass(struct pass *v)
{
    memset(v, 0, sizeof *v);
    v->active = 1;
    v->first_word = -1;
    v->started_ms = now_ms();
    passes++;
    say("verify begin pass=%" PRIu64 " counter=%" PRIu64, passes, counter);
}

static void step_pass(struct pass *v)
{
    uint64_t end = v->next_page + VERIFY_CHUNK_PAGES;
    if (end > pages)
        end = pages;
    for (uint64_t p = v->next_page; p < end; p++) {
        uint64_t e, g;
        int w = check_page(p, &e, &g);
        if (w >= 0) {
            if (!v->bad_pages++) {
                v->first_bad = p;
                v->first_word = w;
                v->expected = e;
                v->got = g;
            }
        }
    }
    v->next_page = end;
    if (end < pages)
        return;
    v->active = 0;
    uint64_t ms = now_ms() - v->started_ms;
    if (!v->bad_pages) {
        say("verify ok pass=%" PRIu64 " pages=%" PRIu64 " counter=%" PRIu64 " ms=%" PRIu64, passes, pages,
            counter, ms);
    } else {
        /* The byte offset of the first differing byte in the first bad word. */
        unsigned off = (unsigned)v->first_word * 8;
        uint64_t diff = v->expected ^ v->got;
        while (!(diff & 0xff)) {
            diff >>= 8;
            off++;
        }
        say("verify FAIL pass=%" PRIu64 " page=%" PRIu64 " offset=%u expected=%016" PRIx64 " got=%016" PRIx64
            " bad_pages=%" PRIu64 " pages=%" PRIu64 " counter=%" PRIu64 " ms=%" PRIu64,
            passes, v->first_bad, off, v->expected, v->got, v->bad_pages, pages, counter, ms);
    }
}

int main(void)
{
    parse_cmdline();
    quiet_console();
    pages = P.fill / PAGE_SIZE;
    wss_pages = P.wss / PAGE_SIZE;
    dirty_pages = wss_pages;
    mem = mmap(NULL, pages * PAGE_SIZE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    generation = calloc(wss_pages ? wss_pages : 1, sizeof *generation);
    if (mem == MAP_FAILED || !generation)
        fatal("cannot allocate ferry.fill bytes");

    uint64_t t0 = now_ms();
    for (uint64_t p = 0; p < pages; p++)
        fill_page(p);
    say("ready fill=%" PRIu64 " pages=%" PRIu64 " wss_pages=%" PRIu64 " dirty_ms=%u verify_s=%u seed=%" PRIu64
        " fill_ms=%" PRIu64 " counter=%" PRIu64,
        P.fill, pages, wss_pages, P.dirty_ms, P.verify_s, P.seed, now_ms() - t0, counter);

    if (P.disk_kib)
        disk_open();

    struct pass v = {0};
    int requested = 0, console_gone = 0;
    uint64_t now = now_ms();
    uint64_t next_dirty = now + P.dirty_ms;
    uint64_t next_disk = P.disk_kib && P.disk_ms ? now + P.disk_ms : UINT64_MAX;
    uint64_t next_verify = P.verify_s ? now + P.verify_s * 1000ull : UINT64_MAX;
    for (;;) {
        now = now_ms();
        if (P.dirty_ms && now >= next_dirty) {
            dirty_round();
            /* Late (a paused or migrating guest): start again from now, no burst. */
            next_dirty = (now - next_dirty > P.dirty_ms) ? now + P.dirty_ms : next_dirty + P.dirty_ms;
            if (P.corrupt_at && counter == P.corrupt_at)
                corrupt(pages / 2);
        }
        if (now >= next_disk) {
            if (!disk_stopped)
                disk_round();
            next_disk = disk_stopped ? UINT64_MAX : now + P.disk_ms;
        }
        if (!v.active && (requested || now >= next_verify)) {
            if (now >= next_verify)
                next_verify = now + P.verify_s * 1000ull;
            requested = 0;
            begin_pass(&v);
        }
        int timeout = -1;
        if (v.active)
            timeout = 0;
        else {
            uint64_t until = P.dirty_ms ? next_dirty : UINT64_MAX;
            if (next_verify < until)
                until = next_verify;
            if (next_disk < until)
                until = next_disk;
            if (until != UINT64_MAX)
                timeout = until > now ? (int)(until - now) : 0;
        }
        struct pollfd pfd = {.fd = console_gone ? -1 : 0, .events = POLLIN};
        if (poll(&pfd, 1, timeout) > 0) {
            if (pfd.revents & POLLIN) {
                if (read_console() & REQ_VERIFY)
                    requested = 1;
            } else if (pfd.revents & (POLLHUP | POLLERR | POLLNVAL)) {
                console_gone = 1; /* no input ever again: do not spin on it */
            }
        }
        if (v.active)
            step_pass(&v);
    }
}
