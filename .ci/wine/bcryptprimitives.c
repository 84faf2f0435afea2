/* `make test-windows` only: Rust's standard library (1.78+) and `getrandom` take random
 * bytes from `ProcessPrng` in bcryptprimitives.dll, which Wine 8 (Debian 12) lacks. This
 * stand-in, copied into the throwaway Wine prefix, forwards to BCryptGenRandom (the
 * system RNG, which Wine has). Never shipped: real Windows has the real DLL. */
#include <windows.h>
#include <bcrypt.h>

__declspec(dllexport) BOOL WINAPI ProcessPrng(PBYTE data, SIZE_T len)
{
    while (len > 0) {
        ULONG chunk = len > 0x7fffffff ? 0x7fffffff : (ULONG)len;
        if (BCryptGenRandom(NULL, data, chunk, BCRYPT_USE_SYSTEM_PREFERRED_RNG) != 0)
            return FALSE;
        data += chunk;
        len -= chunk;
    }
    return TRUE;
}
