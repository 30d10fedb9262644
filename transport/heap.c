/* Giving freed heap memory back to the system after bursts (transport/heap.h). */
#include <malloc.h>
#include <stdio.h>
#include <unistd.h>

#include "transport/heap.h"

/* Resident bytes of this process (/proc/self/statm), or 0. */
static size_t resident(void)
{
    FILE *f = fopen("/proc/self/statm", "r");
    unsigned long size = 0, pages = 0;
    if (f) {
        if (fscanf(f, "%lu %lu", &size, &pages) != 2)
            pages = 0;
        fclose(f);
    }
    return (size_t)pages * (size_t)sysconf(_SC_PAGESIZE);
}

size_t iotgw_heap_release(void)
{
    static size_t least_free = (size_t)-1; /* free bytes in the heap: the fewest seen since the last trim */
    static size_t rss_after;               /* resident bytes after the last trim (or at the first call) */
    struct mallinfo2 mi = mallinfo2();
    size_t rss = resident();
    if (!rss_after)
        rss_after = rss;
    if (mi.fordblks < least_free)
        least_free = mi.fordblks;
    /* free now and a burst's worth freed since, or resident again (one too short to be seen) */
    int worth = mi.fordblks >= IOTGW_HEAP_SLACK &&
                (mi.fordblks - least_free >= IOTGW_HEAP_SLACK || rss >= rss_after + IOTGW_HEAP_SLACK);
    if (!worth)
        return 0;
    malloc_trim(0);
    least_free = mallinfo2().fordblks;
    rss_after = resident();
    return rss > rss_after ? rss - rss_after : 0;
}
