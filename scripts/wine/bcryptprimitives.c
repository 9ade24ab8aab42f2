/*
 * bcryptprimitives.dll shim for Wine 8: Go 1.22+ seeds its random source from
 * ProcessPrng, which Wine 8 does not export. This one-function DLL forwards it
 * to RtlGenRandom (advapi32!SystemFunction036). Test use only, never shipped.
 */
#include <windows.h>

BOOLEAN NTAPI SystemFunction036(PVOID buffer, ULONG length);

__declspec(dllexport) BOOL WINAPI ProcessPrng(PBYTE data, SIZE_T length)
{
    while (length > 0) {
        ULONG chunk = length > 0x10000000 ? 0x10000000 : (ULONG)length;
        if (!SystemFunction036(data, chunk))
            return FALSE;
        data += chunk;
        length -= chunk;
    }
    return TRUE;
}
