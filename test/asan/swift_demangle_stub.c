/*
 * swift_demangle_stub.c - preloaded beside the AddressSanitizer runtime
 * into postgres by `scripts/test.sh --asan` (docs/testing.md).
 *
 * Why: a preloaded runtime initialises on the first malloc, and in
 * Debian 12's postgres that is libgpg-error's constructor, inside
 * bindtextdomain() with glibc's gettext lock held.  The runtime's start-up
 * looks up swift_demangle with dlsym(); the failed lookup's dlerror()
 * translates its message, takes the same lock and the process hangs
 * before main() (gcc 12 and clang 14 runtimes alike).  With the symbol
 * present the lookup succeeds and nothing is translated.  Returning NULL
 * means "not a Swift name": reports are symbolised as usual.
 */
#include <stddef.h>
#include <stdint.h>

char	   *swift_demangle(const char *mangled, size_t mangled_len, char *out,
						   size_t *out_len, uint32_t flags);

char *
swift_demangle(const char *mangled, size_t mangled_len, char *out,
			   size_t *out_len, uint32_t flags)
{
	return NULL;
}
